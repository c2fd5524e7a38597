"""`vi_jax.families.MultivariateNormalDiag`: distrax's diagonal Gaussian with faster draws.

Its density, KL, indexing and pytree behaviour are distrax's; its draws are N(loc,
diag(scale^2)) (moments within 4 standard errors), its one-pass log q equals
`log_prob` of the draw, and the pathwise gradients are those of loc + scale * eps."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_utils import assert_unbiased

from vi_jax.families import DiagonalGaussian, MultivariateNormalDiag
from vi_jax.models import MLP, GaussianEncoder, StandardNormalPrior

LOC = jnp.array([[0.0, 1.0, -2.0], [3.0, -1.0, 0.5]])
SCALE = jnp.array([[0.5, 2.0, 1.0], [0.1, 1.5, 3.0]])


def test_is_a_distrax_diagonal_gaussian_with_its_density_and_kl():
    q = MultivariateNormalDiag(LOC, SCALE)
    ref = distrax.MultivariateNormalDiag(LOC, SCALE)
    assert isinstance(q, distrax.MultivariateNormalDiag)
    assert q.batch_shape == (2,) and q.event_shape == (3,)
    z = jnp.linspace(-2, 2, 18).reshape(3, 2, 3)
    np.testing.assert_allclose(q.log_prob(z), ref.log_prob(z), rtol=1e-6)
    np.testing.assert_allclose(q.entropy(), ref.entropy(), rtol=1e-6)
    prior = distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3))
    np.testing.assert_allclose(q.kl_divergence(prior), ref.kl_divergence(prior), rtol=1e-6)
    np.testing.assert_allclose(prior.kl_divergence(q), prior.kl_divergence(ref), rtol=1e-6)
    part = q[1]
    assert type(part) is MultivariateNormalDiag and part.batch_shape == ()
    np.testing.assert_array_equal(part.loc, LOC[1])
    # A pytree: through jit and back, the same class.
    assert type(jax.jit(lambda d: d)(q)) is MultivariateNormalDiag


def test_sample_and_log_prob_agree_and_shapes():
    q = MultivariateNormalDiag(LOC, SCALE)
    key = jax.random.key(0)
    z, log_q = q.sample_and_log_prob(seed=key, sample_shape=(4, 5))
    assert z.shape == (4, 5, 2, 3) and log_q.shape == (4, 5, 2)
    np.testing.assert_array_equal(z, q.sample(seed=key, sample_shape=(4, 5)))
    np.testing.assert_allclose(log_q, q.log_prob(z), rtol=1e-5, atol=1e-5)
    # A loc broadcast against a batch of scales.
    b = MultivariateNormalDiag(jnp.zeros(3), SCALE)
    zb, lb = b.sample_and_log_prob(seed=key, sample_shape=(7,))
    assert zb.shape == (7, 2, 3)
    np.testing.assert_allclose(lb, b.log_prob(zb), rtol=1e-5, atol=1e-5)


def test_draws_have_the_gaussian_moments():
    q = MultivariateNormalDiag(LOC, SCALE)
    z = np.asarray(q.sample(seed=jax.random.key(1), sample_shape=(40_000,)), np.float64)
    assert_unbiased(z, np.broadcast_to(LOC, z.shape[1:]), what="mean")
    sq = (z - np.asarray(LOC)) ** 2
    assert_unbiased(sq, np.asarray(SCALE) ** 2, what="variance")
    # Independent coordinates: no correlation between the latent dimensions.
    std = (z - np.asarray(LOC)) / np.asarray(SCALE)
    assert_unbiased(std[..., 0] * std[..., 1], np.zeros((2,)), what="correlation")


def test_pathwise_gradient_is_that_of_loc_plus_scale_eps():
    # d/dloc E[sum z^2] = 2 loc; d/dscale = 2 scale (E[eps^2] = 1): unbiased over keys.
    def f(loc, scale, key):
        z = MultivariateNormalDiag(loc, scale).sample(seed=key, sample_shape=(8,))
        return jnp.mean(jnp.sum(z**2, axis=(-1, -2)))

    keys = jax.random.split(jax.random.key(2), 4000)
    g_loc, g_scale = jax.jit(jax.vmap(jax.grad(f, argnums=(0, 1)), in_axes=(None, None, 0)))(
        LOC, SCALE, keys
    )
    assert_unbiased(g_loc, 2 * LOC, what="d/dloc")
    assert_unbiased(g_scale, 2 * SCALE, what="d/dscale")


def test_nan_parameters_give_nan_draws():
    q = MultivariateNormalDiag(LOC.at[0, 1].set(jnp.nan), SCALE)
    z, log_q = q.sample_and_log_prob(seed=jax.random.key(3), sample_shape=(2,))
    assert np.isnan(z[:, 0, 1]).all() and np.isfinite(z[:, 1]).all()
    assert np.isfinite(log_q).all()  # log q depends on the noise and the scale only
    q = MultivariateNormalDiag(LOC, SCALE.at[1, 0].set(jnp.nan))
    z, log_q = q.sample_and_log_prob(seed=jax.random.key(3), sample_shape=(2,))
    assert np.isnan(z[:, 1, 0]).all() and np.isnan(log_q[:, 1]).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: GaussianEncoder(MLP(4, (5,), 6, rngs=0), 3)(jnp.ones((2, 4))),
        lambda: DiagonalGaussian(3)(jnp.zeros((2, 6))),
        lambda: StandardNormalPrior(3)(),
    ],
    ids=["encoder", "family", "prior"],
)
def test_the_library_gaussians_are_this_class(make):
    assert type(make()) is MultivariateNormalDiag
