"""Gaussian families: densities against distrax's full-covariance Gaussian, round trips of
params, the linear-Gaussian posterior recovered exactly, errors."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from family_helpers import random_params

from vi_jax.families import (
    DiagonalGaussian,
    FullCovarianceGaussian,
    LowRankGaussian,
    LowRankMultivariateNormal,
    make_family,
)

D, B = 3, 4


@pytest.mark.parametrize("name", ["diag", "fullrank", "lowrank"])
def test_log_prob_matches_full_covariance_gaussian(name):
    fam = make_family(name, D, rank=2)
    params = random_params(jax.random.key(0), B, fam)

    def check(params, key):
        q = fam(params)
        z, log_q = q.sample_and_log_prob(seed=key, sample_shape=(5,))
        cov = q.covariance()
        ref = distrax.MultivariateNormalFullCovariance(q.mean(), cov)
        return z, log_q, ref.log_prob(z), q.log_prob(z)

    @jax.jit  # one compilation: the check, params_of's round trip, vmap over keys, grad
    def run(params, keys):
        z, log_q, ref, lp = check(params, keys[0])
        round_trip = fam(fam.params_of(fam(params))).log_prob(z)
        out = jax.vmap(lambda k: check(params, k)[1])(keys)
        g = jax.grad(lambda p: jnp.sum(check(p, keys[0])[1]))(params)
        return z, log_q, ref, lp, round_trip, out, g

    keys = jax.random.split(jax.random.key(2), 3)
    z, log_q, ref, lp, round_trip, out, g = run(params, keys)
    assert z.shape == (5, B, D)
    np.testing.assert_allclose(lp, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(log_q, ref, rtol=1e-4, atol=1e-4)
    # params_of inverts the family map (used to warm-start per-datapoint SVI).
    np.testing.assert_allclose(round_trip, lp, atol=1e-4)
    # vmap over keys and grad through the params.
    assert out.shape == (3, 5, B)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.sum(jnp.abs(g))) > 0


def test_low_rank_sample_covariance():
    q = LowRankMultivariateNormal(jnp.zeros(D), jnp.full(D, 0.5), jnp.array([[1.0], [0.5], [-1.0]]))
    z = q.sample(seed=jax.random.key(3), sample_shape=(40000,))
    emp = jnp.cov(z.T)
    # stderr of a sample covariance entry ~ sqrt((s_ii s_jj + s_ij^2) / n) <= 0.01 here
    np.testing.assert_allclose(emp, q.covariance(), atol=0.04)
    np.testing.assert_allclose(
        q.entropy(),
        distrax.MultivariateNormalFullCovariance(jnp.zeros(D), q.covariance()).entropy(),
        rtol=1e-5,
    )


@pytest.mark.parametrize("family", [FullCovarianceGaussian(2), LowRankGaussian(2, rank=1)])
def test_linear_gaussian_posterior_is_recovered_exactly(fixed_model, family):
    """Maximising the exact ELBO over the family: full covariance (and rank 1 in D = 2,
    which suffices) reaches the exact posterior: approximation gap ~ 0."""
    x = jnp.array([[0.5, -1.0, 0.3, 0.2, 1.0], [1.0, 0.4, -0.2, 0.8, 0.1]])
    mean, cov = fixed_model.posterior_params(x)

    def exact_elbo(params):
        q = family(params)
        tri = jnp.linalg.cholesky(q.covariance())
        return fixed_model.elbo(x, q.mean(), tri)

    opt = optax.adam(3e-2)
    params0 = family.init_params(jnp.zeros((2, 2)), jnp.ones((2, 2)))

    @jax.jit
    def fit(params):
        def body(carry, _):
            p, s = carry
            g = jax.grad(lambda p: -jnp.sum(exact_elbo(p)))(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=1500)
        return p

    params = fit(params0)
    q = family(params)
    np.testing.assert_allclose(q.mean(), mean, atol=2e-3)
    np.testing.assert_allclose(q.covariance(), jnp.broadcast_to(cov, (2, 2, 2)), atol=2e-3)
    gap = fixed_model.log_marginal(x) - exact_elbo(params)
    assert bool(jnp.all(gap < 1e-3)) and bool(jnp.all(gap > -1e-4)), gap
    # the diagonal family cannot: its gap stays clearly positive for this correlated posterior
    diag = DiagonalGaussian(2)
    q_d = diag(
        diag.init_params(mean, jnp.sqrt(1.0 / jnp.diag(jnp.linalg.inv(cov))) * jnp.ones((2, 2)))
    )
    gap_d = fixed_model.log_marginal(x) - fixed_model.elbo(
        x, q_d.loc, jax.vmap(jnp.diag)(q_d.scale_diag)
    )
    assert bool(jnp.all(gap_d > 0.05)), gap_d


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="`latent_dim`"):
        FullCovarianceGaussian(0)
    with pytest.raises(ValueError, match="`rank`"):
        LowRankGaussian(3, rank=0)
    with pytest.raises(ValueError, match="`params`"):
        FullCovarianceGaussian(3)(jnp.zeros((2, 5)))
    with pytest.raises(TypeError, match="`q`"):
        LowRankGaussian(3).params_of(distrax.Normal(0.0, 1.0))
