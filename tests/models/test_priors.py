import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vi_jax.estimators import kl_divergence
from vi_jax.models import (
    LaplacePrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    analytic_kl,
    kl_is_analytic,
)
from vi_jax.models.functional import merge_params, split_params


def _q(batch=3, dim=2, seed=0):
    rng = np.random.default_rng(seed)
    loc = jnp.asarray(rng.normal(size=(batch, dim)), jnp.float32)
    scale = jnp.asarray(rng.uniform(0.3, 1.5, size=(batch, dim)), jnp.float32)
    return distrax.MultivariateNormalDiag(loc, scale)


def _mog(dim, seed=1):
    prior = MixtureOfGaussiansPrior(dim, 3, rngs=nnx.Rngs(seed), init_spread=2.0)
    # non-trivial weights and scales, set directly on the parameters
    prior.logits[...] = jnp.array([0.5, -1.0, 1.5])
    prior.raw_scales[...] = prior.raw_scales[...] + jnp.linspace(-1.0, 1.0, 3 * dim).reshape(3, dim)
    return prior


@functools.partial(jax.jit, static_argnums=3)
def _mc_terms(q, p, key, n):
    """Mean and standard error of log q(z) - log p(z), z ~ q: `[batch]` each."""
    z = q.sample(seed=key, sample_shape=(n,))
    terms = q.log_prob(z) - p.log_prob(z)
    return jnp.mean(terms, 0), jnp.std(terms, 0) / jnp.sqrt(n)


@pytest.mark.parametrize(
    "make", [lambda: StandardNormalPrior(2), lambda: LaplacePrior(2, 0.5), lambda: _mog(2)]
)
def test_prior_shapes(make):
    p = make()()
    assert p.batch_shape == () and p.event_shape == (2,)
    z = jnp.zeros((4, 3, 2))
    # one compiled program instead of one compilation per eager operation
    log_prob, sample = jax.jit(
        lambda p, z, key: (p.log_prob(z), p.sample(seed=key, sample_shape=(5,)))
    )(p, z, jax.random.key(0))
    assert log_prob.shape == (4, 3) and sample.shape == (5, 2)
    assert bool(jnp.all(jnp.isfinite(log_prob))) and bool(jnp.all(jnp.isfinite(sample)))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _trapezoid_1d(p, lo, hi, n):
    z = jnp.linspace(lo, hi, n)
    return jnp.trapezoid(jnp.exp(p.log_prob(z[:, None])), z)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _trapezoid_2d(p, lo, hi, n):
    g = jnp.linspace(lo, hi, n)
    zz = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), axis=-1)
    return jnp.trapezoid(jnp.trapezoid(jnp.exp(p.log_prob(zz)), g, axis=1), g)


def test_mixture_density_normalised_1d_and_2d():
    p1 = _mog(1)()
    np.testing.assert_allclose(_trapezoid_1d(p1, -25.0, 25.0, 20001), 1.0, atol=1e-4)
    p2 = _mog(2, seed=3)()
    np.testing.assert_allclose(_trapezoid_2d(p2, -20.0, 20.0, 801), 1.0, atol=1e-3)


def test_laplace_density_normalised_and_matches_formula():
    p = LaplacePrior(1, 0.7)()
    np.testing.assert_allclose(_trapezoid_1d(p, -30.0, 30.0, 60001), 1.0, atol=1e-4)
    z = jnp.array([[0.3, -1.2]])
    expected = jnp.sum(-jnp.abs(z) / 0.7 - jnp.log(2 * 0.7), -1)
    np.testing.assert_allclose(LaplacePrior(2, 0.7)().log_prob(z), expected, rtol=1e-6)


def test_analytic_kl_matches_monte_carlo():
    q = _q(batch=4, dim=3)
    priors = [
        StandardNormalPrior(3)(),
        distrax.MultivariateNormalDiag(jnp.array([0.5, -0.5, 0.0]), jnp.array([2.0, 0.5, 1.0])),
    ]
    n = 20000
    for p in priors:
        assert kl_is_analytic(q, p)
        exact = analytic_kl(q, p)
        assert exact.shape == (4,)
        mc, se = _mc_terms(q, p, jax.random.key(7), n)
        assert bool(jnp.all(jnp.abs(mc - exact) < 4 * se)), (mc, exact, se)
        np.testing.assert_allclose(
            kl_divergence(jax.random.key(7), q, p, n, method="mc"), mc, rtol=1e-5, atol=1e-5
        )  # same key -> same draws


@pytest.mark.parametrize("make", [lambda: LaplacePrior(2), lambda: _mog(2)])
def test_non_analytic_kl_falls_back_to_mc(make):
    q = _q(batch=3, dim=2)
    p = make()()
    assert not kl_is_analytic(q, p)
    assert analytic_kl(q, p) is None
    n = 20000
    est = kl_divergence(jax.random.key(3), q, p, n)
    assert est.shape == (3,)
    np.testing.assert_allclose(est, kl_divergence(jax.random.key(3), q, p, n, method="mc"))
    # positive (KL >= 0) well beyond its standard error
    _, se = _mc_terms(q, p, jax.random.key(3), n)
    assert bool(jnp.all(est > -4 * se))


def test_kl_jit_vmap_grad():
    q = _q(batch=5, dim=2)
    p = StandardNormalPrior(2)()

    def analytic(loc, scale):
        return analytic_kl(distrax.MultivariateNormalDiag(loc, scale), p)

    loc, scale = q.loc, q.scale_diag
    np.testing.assert_allclose(jax.jit(analytic)(loc, scale), analytic(loc, scale), rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(analytic)(loc, scale), analytic(loc, scale), rtol=1e-5)
    # d KL / d loc = loc for a standard normal prior
    g = jax.grad(lambda m: jnp.sum(analytic(m, scale)))(loc)
    np.testing.assert_allclose(g, loc, rtol=1e-5)
    # MC KL: pathwise gradient, jit and vmap over keys
    keys = jax.random.split(jax.random.key(0), 3)
    f = jax.jit(
        lambda k, m: kl_divergence(k, distrax.MultivariateNormalDiag(m, scale), p, 4, method="mc")
    )
    assert jax.vmap(f, in_axes=(0, None))(keys, loc).shape == (3, 5)
    assert bool(jnp.all(jnp.isfinite(jax.grad(lambda m: jnp.sum(f(keys[0], m)))(loc))))


def test_mixture_prior_params_train():
    prior = _mog(2)
    graphdef, params, rest = split_params(prior)
    assert set(params) == {"logits", "means", "raw_scales"}
    z = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)), jnp.float32)

    def f(p):
        return jnp.sum(merge_params(graphdef, p, rest)().log_prob(z))

    grads = jax.jit(jax.grad(f))(params)
    for leaf in jax.tree.leaves(grads):
        assert bool(jnp.all(jnp.isfinite(leaf))) and bool(jnp.any(leaf != 0))


def test_refusals():
    with pytest.raises(ValueError, match="`latent_dim`"):
        StandardNormalPrior(0)
    with pytest.raises(ValueError, match="`scale`"):
        LaplacePrior(2, 0.0)
    with pytest.raises(ValueError, match="`num_components`"):
        MixtureOfGaussiansPrior(2, 0, rngs=0)
    with pytest.raises(ValueError, match="`num_samples`"):
        kl_divergence(jax.random.key(0), _q(), StandardNormalPrior(2)(), 0, method="mc")
    with pytest.raises(TypeError, match="`latent_dim`"):
        StandardNormalPrior(2.5)
