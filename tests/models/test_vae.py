import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vi_jax.models import (
    MLP,
    VAE,
    BernoulliDecoder,
    GaussianEncoder,
    StandardNormalPrior,
    count_params,
    iwae_paper_vae,
    make_conv_vae,
    make_mlp_vae,
    merge_params,
    pytorch_example_vae,
    split_params,
)

# Tiny widths shared by all model tests (parameter initialisers compile per shape).
DATA, LATENT, HIDDEN = 64, 2, (16,)


def _x(batch=5, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((batch, DATA)) < 0.5, jnp.float32)


def _z(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.fixture(scope="module")
def vae():
    return make_mlp_vae(DATA, LATENT, HIDDEN, "tanh", rngs=nnx.Rngs(0))


def test_shapes(vae):
    x = _x()
    q = vae.posterior(x)
    assert q.batch_shape == (5,) and q.event_shape == (LATENT,)
    z = _z((3, 5, LATENT))
    assert vae.log_joint_fn(x)(z).shape == (3, 5)
    assert vae.log_likelihood_fn(x)(z).shape == (3, 5)
    p = vae.decode(z)
    assert p.batch_shape == (3, 5) and p.event_shape == (DATA,)
    assert vae.prior_distribution().event_shape == (LATENT,)
    s = vae.sample(jax.random.key(0), 4)
    assert s.shape == (4, DATA) and bool(jnp.all((s >= 0) & (s <= 1)))
    assert vae.reconstruct(jax.random.key(1), x).shape == (5, DATA)


def test_log_joint_is_prior_plus_likelihood_by_hand(vae):
    x = _x()
    z = _z((3, 5, LATENT))
    logits = vae.decoder.net(z)
    log_lik = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
    log_prior = jnp.sum(-0.5 * z**2 - 0.5 * jnp.log(2 * jnp.pi), -1)
    np.testing.assert_allclose(vae.log_likelihood_fn(x)(z), log_lik, rtol=1e-5)
    np.testing.assert_allclose(vae.log_joint_fn(x)(z), log_prior + log_lik, rtol=1e-5)
    # element [s, b] depends only on z[s, b]
    np.testing.assert_allclose(
        vae.log_joint_fn(x[2])(z[1, 2]), vae.log_joint_fn(x)(z)[1, 2], rtol=1e-5
    )


@pytest.mark.parametrize(
    "likelihood,prior", [("gaussian", "normal"), ("bernoulli", "laplace"), ("bernoulli", "mog")]
)
def test_variants(likelihood, prior):
    vae = make_mlp_vae(DATA, LATENT, HIDDEN, "relu", likelihood, prior, rngs=1, num_components=3)
    x = _x(4)
    z = _z((2, 4, LATENT))
    lj = vae.log_joint_fn(x)(z)
    expected = vae.prior_distribution().log_prob(z) + vae.decode(z).log_prob(x)
    np.testing.assert_allclose(lj, expected, rtol=1e-5)
    assert bool(jnp.all(jnp.isfinite(lj)))


def test_conv_vae_shapes():
    vae = make_conv_vae(LATENT, (8, 8, 1), channels=(4,), hidden=16, rngs=2)
    x = _x(3)
    assert vae.data_dim == DATA
    assert vae.posterior(x).batch_shape == (3,)
    z = _z((2, 3, LATENT))
    assert jax.jit(lambda z: vae.log_joint_fn(x)(z))(z).shape == (2, 3)


def test_presets_architecture():
    # Built abstractly: shapes and counts without initialising 0.65M parameters.
    torch_vae = nnx.eval_shape(lambda: pytorch_example_vae(rngs=0))
    _, params, _ = split_params(torch_vae)
    assert count_params(params) == (784 * 400 + 400) + (400 * 40 + 40) + (20 * 400 + 400) + (
        400 * 784 + 784
    )
    assert torch_vae.latent_dim == 20 and torch_vae.encoder.net.activation == "relu"
    iwae = nnx.eval_shape(lambda: iwae_paper_vae(rngs=0))
    widths = [layer.kernel.shape for layer in iwae.encoder.net.layers]
    assert widths == [(784, 200), (200, 200), (200, 100)]
    widths = [layer.kernel.shape for layer in iwae.decoder.net.layers]
    assert widths == [(50, 200), (200, 200), (200, 784)]
    assert iwae.encoder.net.activation == "tanh"
    assert isinstance(iwae.decoder, BernoulliDecoder)


def test_split_merge_round_trip(vae):
    graphdef, params, rest = split_params(vae)
    hash(graphdef)  # static: usable as a jit static argument / closure
    again = merge_params(graphdef, params, rest)
    x = _x()
    z = _z((2, 5, LATENT))
    np.testing.assert_allclose(again.log_joint_fn(x)(z), vae.log_joint_fn(x)(z))
    shifted = jax.tree.map(lambda p: p + 0.1, params)
    other = merge_params(graphdef, shifted)
    assert not np.allclose(other.log_joint_fn(x)(z), vae.log_joint_fn(x)(z))
    # the original module is untouched
    np.testing.assert_allclose(again.log_joint_fn(x)(z), vae.log_joint_fn(x)(z))
    _, params2, _ = split_params(other)
    for a, b in zip(jax.tree.leaves(params2), jax.tree.leaves(shifted), strict=True):
        np.testing.assert_allclose(a, b)


def test_jit_vmap_grad(vae):
    graphdef, params, rest = split_params(vae)
    x = _x()
    z = _z((2, 5, LATENT))

    def f(params, x, z):
        return merge_params(graphdef, params, rest).log_joint_fn(x)(z)

    value = jax.jit(f)(params, x, z)
    np.testing.assert_allclose(value, f(params, x, z), rtol=1e-5)
    per_datum = jax.jit(jax.vmap(f, in_axes=(None, 0, 1), out_axes=1))(params, x, z)
    np.testing.assert_allclose(per_datum, value, rtol=1e-5)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(f(p, x, z))))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    # z is given: only the decoder (and a learnable prior) can receive gradient
    assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads["decoder"]))
    keys = jax.random.split(jax.random.key(0), 2)
    samples = jax.jit(jax.vmap(lambda k: vae.sample(k, 3)))(keys)
    assert samples.shape == (2, 3, DATA)


def test_refusals(vae):
    with pytest.raises(ValueError, match="`likelihood`"):
        make_mlp_vae(DATA, LATENT, HIDDEN, likelihood="poisson", rngs=0)
    with pytest.raises(ValueError, match="`prior`"):
        make_mlp_vae(DATA, LATENT, HIDDEN, prior="cauchy", rngs=0)
    with pytest.raises(ValueError, match="`activation`"):
        make_mlp_vae(DATA, LATENT, HIDDEN, activation="swish9", rngs=0)
    with pytest.raises(ValueError, match="`latent_dim`"):
        make_mlp_vae(DATA, 0, HIDDEN, rngs=0)
    with pytest.raises(ValueError, match="`latent_dim`"):
        make_conv_vae(0, (8, 8, 1), rngs=0)
    with pytest.raises(ValueError, match="`prior`"):
        make_conv_vae(LATENT, (8, 8, 1), prior="flat", rngs=0)
    with pytest.raises(ValueError, match="`x`"):
        vae.posterior(jnp.ones((5, DATA + 1)))
    with pytest.raises(ValueError, match="`x`"):
        vae.posterior(jnp.full((2, DATA), jnp.nan))
    with pytest.raises(ValueError, match="`z`"):
        vae.log_joint_fn(_x())(jnp.ones((2, 5, LATENT + 1)))
    with pytest.raises(ValueError, match="`num`"):
        vae.sample(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(vae.encoder, vae.decoder, StandardNormalPrior(LATENT + 1))
    enc = GaussianEncoder(MLP(16, [], 4, rngs=0), LATENT)
    with pytest.raises(ValueError, match="widths disagree"):
        VAE(enc, vae.decoder, vae.prior)
    with pytest.raises(TypeError, match="`prior`"):
        VAE(vae.encoder, vae.decoder, distrax.Normal(0.0, 1.0))
