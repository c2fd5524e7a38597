"""Binary- and categorical-latent VAEs: shapes, the standard loss, exact log p(x), bad input."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vi_jax.estimators import discrete, vimco
from vi_jax.models import (
    BinaryVAE,
    lecture_binary_vae,
    linear_binary_vae,
    make_binary_vae,
    make_vae_loss,
    nonlinear_binary_vae,
    split_params,
    vae_view,
)

X = (jax.random.uniform(jax.random.key(0), (3, 16)) < 0.5).astype(jnp.float32)
D = 4  # the small Bernoulli model's latents: 2^4 configurations to sum by hand


# Initialising a network compiles its initialisers once per weight shape (seconds each on
# CPU), so every test shares these two models, whose layers share shapes where they can.
@pytest.fixture(scope="module")
def models():
    return {
        "bernoulli": make_binary_vae(16, D, (8,), rngs=0),
        # 2 groups of 2 classes: a 4-wide latent vector, the same layer shapes as above
        "categorical": make_binary_vae(
            16, 2, (8,), rngs=0, latent_type="categorical", num_classes=2
        ),
    }


def test_standard_sizes():
    # Shapes only (nnx.eval_shape): the sizes are the claim, not the random weights.
    for make, d in (
        (linear_binary_vae, 200),
        (nonlinear_binary_vae, 200),
        (lecture_binary_vae, 20),
    ):
        m = nnx.eval_shape(lambda make=make: make(rngs=0))
        assert isinstance(m, BinaryVAE) and m.latent_dim == d and m.data_dim == 784
    nonlinear = nnx.eval_shape(lambda: nonlinear_binary_vae(rngs=0))
    assert len(nonlinear.encoder.net.layers) == 2
    assert nonlinear.encoder.net.layers[0].kernel.shape == (784, 200)
    assert len(nnx.eval_shape(lambda: linear_binary_vae(rngs=0)).decoder.net.layers) == 1
    lecture = nnx.eval_shape(lambda: lecture_binary_vae(rngs=0))
    assert lecture.decoder.net.layers[0].kernel.shape == (20, 784)


@pytest.mark.parametrize("latent_type", ["bernoulli", "categorical"])
def test_view_and_loss_under_jit_and_grad(models, latent_type):
    m = models[latent_type]
    graphdef, params, rest = split_params(m)
    view = vae_view(graphdef, rest)(params, X)
    width = D  # D binary latents, or G * C = 2 * 2 one-hot entries
    z = view.posterior.sample(seed=jax.random.key(1), sample_shape=(2,))
    assert z.shape == (2, 3, width) and view.log_joint(z).shape == (2, 3)
    ests = [discrete.disarm, vimco] if latent_type == "bernoulli" else [discrete.straight_through]
    loss_fns = [
        make_vae_loss(graphdef, est, num_samples=2, rest=rest, monitor=False) for est in ests
    ]

    @jax.jit  # one compilation for every estimator
    def all_losses(params, key):
        return [jax.value_and_grad(f, has_aux=True)(params, X, key) for f in loss_fns]

    for (loss, _), grads in all_losses(params, jax.random.key(2)):
        leaves = jax.tree_util.tree_leaves(grads)
        assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in leaves)
        assert any(np.any(g != 0) for g in leaves)


def test_baseline_and_prior(models):
    m = models["bernoulli"]
    assert m.baseline(X).shape == (3,)
    no_net = nnx.eval_shape(lambda: make_binary_vae(16, D, (8,), rngs=0, baseline_hidden=None))
    np.testing.assert_array_equal(no_net.baseline(X), 0.0)
    assert m.prior_distribution().event_shape == (D,)


def test_exact_log_marginal_matches_python_sum(models):
    m = models["bernoulli"]
    lj = m.log_joint_fn(X)
    bits = np.array(list(itertools.product([0.0, 1.0], repeat=D)), np.float32)  # [16, D]
    zb = jnp.broadcast_to(jnp.asarray(bits)[:, None], (len(bits), 3, D))
    np.testing.assert_allclose(
        m.exact_log_marginal(X, chunk_size=4), jax.nn.logsumexp(lj(zb), axis=0), rtol=1e-5
    )


def test_bad_input(models):
    m = models["bernoulli"]
    with pytest.raises(ValueError, match="`x` must be binary"):
        m.posterior(X * 0.5)
    # above the limit: refused with the time a timed chunk of this model predicts
    with pytest.raises(ValueError, match=r"D = 4 is above the enumeration limit 3.*would take"):
        m.exact_log_marginal(X[:1], chunk_size=4, max_latents=3)
    with pytest.raises(ValueError, match="enumerates binary latents only"):
        models["categorical"].exact_log_marginal(X)
    with pytest.raises(ValueError, match="`latent_type`"):
        make_binary_vae(16, 4, rngs=0, latent_type="gaussian")
    with pytest.raises(ValueError, match="`num_classes`"):
        make_binary_vae(16, 4, rngs=0, latent_type="categorical", num_classes=1)
