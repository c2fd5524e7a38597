"""`init_decoder_bias` / `mean_logits`: the decoder's output bias at the mean image's logit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_jax.models import (
    BernoulliDecoder,
    ConvDecoderNet,
    GaussianDecoder,
    init_decoder_bias,
    make_binary_vae,
    make_mlp_vae,
    make_two_layer_vae,
    mean_logits,
)

D = 12
X = np.random.default_rng(0).random((40, D)).astype(np.float32)
X[:, 0] = 0.0  # a pixel never on: clipped to eps
X[:, 1] = 1.0  # always on: clipped to 1 - eps


def _expected(x, eps=1e-3):
    m = np.clip(np.asarray(x, np.float64).mean(0), eps, 1 - eps)
    return np.log(m / (1 - m))


def _output_bias(vae):
    decoder = getattr(vae.decoder, "decoder", vae.decoder)
    return np.asarray(decoder.net.layers[-1].bias.get_value())


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_mlp_vae(data_dim=D, latent_dim=2, hidden=(5,), rngs=0),
        lambda: make_two_layer_vae(D, (3, 2), ((5,), (4,)), rngs=0),
        lambda: make_binary_vae(D, 3, (5,), "tanh", rngs=0),
    ],
    ids=["one-layer", "two-layer", "binary"],
)
def test_bias_is_the_logit_of_the_clipped_mean(make):
    vae = make()
    assert init_decoder_bias(vae, X) is vae
    np.testing.assert_allclose(_output_bias(vae), _expected(X), rtol=1e-5, atol=1e-5)
    # A pixel never on in the data gets the clipped logit, not -inf.
    assert _output_bias(vae)[0] == pytest.approx(np.log(1e-3 / (1 - 1e-3)), rel=1e-5)


def test_mean_logits_under_jit_vmap_and_grad():
    np.testing.assert_allclose(jax.jit(mean_logits)(X), _expected(X), rtol=1e-5, atol=1e-5)
    stacked = jnp.stack([X, X[::-1] * 0.5])
    batched = jax.vmap(mean_logits)(stacked)
    np.testing.assert_allclose(batched[1], _expected(X * 0.5), rtol=1e-5, atol=1e-5)
    # d/dx_nd logit(m_d) = 1 / (N m_d (1 - m_d)) where unclipped, 0 where clipped.
    grad = np.asarray(jax.grad(lambda x: mean_logits(x).sum())(jnp.asarray(X)))
    m = X.mean(0)
    np.testing.assert_allclose(grad[0, 2:], 1 / (len(X) * m[2:] * (1 - m[2:])), rtol=1e-4)
    assert np.all(grad[:, :2] == 0)
    # NaN in gives NaN out (in its column only).
    nan_x = X.copy()
    nan_x[3, 4] = np.nan
    out = np.asarray(mean_logits(nan_x))
    assert np.isnan(out[4]) and np.isfinite(np.delete(out, 4)).all()


def test_refusals_name_the_argument():
    vae = make_mlp_vae(data_dim=D, latent_dim=2, hidden=(5,), rngs=0)
    with pytest.raises(ValueError, match="`x` has 5 columns"):
        init_decoder_bias(vae, X[:, :5])
    with pytest.raises(ValueError, match=r"`x` must lie in \[0, 1\]"):
        init_decoder_bias(vae, X * 2)
    with pytest.raises(ValueError, match="`x` has 40 non-finite"):
        init_decoder_bias(vae, np.where(np.arange(D) == 3, np.inf, X))
    nan_x = X.copy()
    nan_x[0, 5] = np.nan
    with pytest.raises(ValueError, match="`x` has NaN"):
        init_decoder_bias(vae, nan_x)
    with pytest.raises(ValueError, match="`x`"):
        init_decoder_bias(vae, X[0])
    with pytest.raises(ValueError, match="at least one row"):
        mean_logits(X[:0])
    with pytest.raises(ValueError, match="`eps`"):
        mean_logits(X, eps=0.0)
    gaussian = make_mlp_vae(data_dim=D, latent_dim=2, hidden=(5,), likelihood="gaussian", rngs=0)
    assert isinstance(gaussian.decoder, GaussianDecoder)
    with pytest.raises(TypeError, match="GaussianDecoder decoder"):
        init_decoder_bias(gaussian, X)
    conv = BernoulliDecoder(ConvDecoderNet(2, image_shape=(4, 4, 1), channels=(2,), rngs=0))
    with pytest.raises(TypeError, match="ConvDecoderNet"):
        init_decoder_bias(conv, np.zeros((3, 16), np.float32))
