"""Gradient estimators against closed forms and enumerations, and their variance orderings."""

import functools
import itertools
import math

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from stat_utils import assert_unbiased, assert_variance_less, flat, mean_and_stderr

import vi_jax.estimators as vie

EPS = 1e-4 if jnp.zeros(()).dtype == jnp.float32 else 1e-9


@pytest.fixture(scope="module")
def lg():
    """Linear-Gaussian model, 2 data points, a mean-field q off the posterior."""
    model = vie.make_linear_gaussian(jax.random.key(2), data_dim=4, latent_dim=2, noise_scale=0.8)
    x, _ = model.sample(jax.random.key(3), 2)
    mean, cov = model.posterior_params(x)
    phi = {
        "loc": mean + 0.4,
        "log_scale": jnp.log(jnp.sqrt(jnp.diag(cov)))[None].repeat(2, 0) + 0.2,
    }
    theta = {"weight": model.weight, "bias": model.bias}
    return model, x, phi, theta


def _q(phi):
    return distrax.MultivariateNormalDiag(phi["loc"], jnp.exp(phi["log_scale"]))


def _lj(model, theta, x):
    return model._replace(weight=theta["weight"], bias=theta["bias"]).log_joint_fn(x)


def _grad_samples(estimator, model, x, phi, theta, k, n, seed=0):
    """[n] gradient draws of sum_batch surrogate w.r.t. (phi, theta), one compiled vmap."""

    def one(key):
        return jax.grad(lambda p, t: estimator(key, _lj(model, t, x), _q(p), k).sum(), (0, 1))(
            phi, theta
        )

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), n))


def _exact_elbo_grad(model, x, phi, theta):
    def f(p, t):
        m = model._replace(weight=t["weight"], bias=t["bias"])
        tri = jax.vmap(jnp.diag)(jnp.exp(p["log_scale"]))
        return m.elbo(x, p["loc"], tri).sum()

    return jax.grad(f, (0, 1))(phi, theta)


ELBO_ESTIMATORS = {
    "pathwise": vie.elbo_pathwise,
    "stl": vie.elbo_stl,
    "score_function": vie.elbo_score_function,
    "score_function_baseline": functools.partial(vie.elbo_score_function, baseline=-9.0),
    "score_function_loo": vie.elbo_score_function_loo,
}


@pytest.mark.parametrize("name", list(ELBO_ESTIMATORS))
def test_elbo_gradient_estimators_are_unbiased(lg, name):
    model, x, phi, theta = lg
    grads = _grad_samples(ELBO_ESTIMATORS[name], model, x, phi, theta, k=4, n=3000)
    exact = _exact_elbo_grad(model, x, phi, theta)
    assert_unbiased(
        flat(grads), flat(jax.tree_util.tree_map(lambda a: a[None], exact))[0], what=name
    )


@pytest.mark.parametrize("name", list(ELBO_ESTIMATORS) + ["iwae_pathwise", "dreg", "vimco"])
def test_surrogate_value_is_the_bound_estimate(lg, name):
    model, x, phi, theta = lg
    est = {
        **ELBO_ESTIMATORS,
        "iwae_pathwise": vie.iwae_pathwise,
        "dreg": vie.iwae_dreg,
        "vimco": vie.vimco,
    }[name]
    key = jax.random.key(5)
    value = est(key, _lj(model, theta, x), _q(phi), 4)
    bound = vie.iwae_bound if name in ("iwae_pathwise", "dreg", "vimco") else vie.elbo
    np.testing.assert_allclose(
        value, bound(key, _lj(model, theta, x), _q(phi), 4), rtol=1e-5, atol=EPS
    )


def test_iwae_estimators_agree_in_mean(lg):
    """pathwise, DReG and VIMCO all estimate grad E[L_K] without bias (theta and phi)."""
    model, x, phi, theta = lg
    k = 8
    ref = flat(_grad_samples(vie.iwae_pathwise, model, x, phi, theta, k, 4000, seed=1))
    for est in (vie.iwae_dreg, vie.vimco):
        g = flat(_grad_samples(est, model, x, phi, theta, k, 4000, seed=2))
        m1, s1 = mean_and_stderr(ref)
        m2, s2 = mean_and_stderr(g)
        z = np.abs(m1 - m2) / np.hypot(s1, s2)
        assert np.all(z < 4), (est.__name__, z)
    # the same check detects the known bias of IWAE-STL in phi (Tucker et al. 2018)
    g = flat(_grad_samples(vie.iwae_stl, model, x, phi, theta, k, 4000, seed=2))
    (m1, s1), (m2, s2) = mean_and_stderr(ref), mean_and_stderr(g)
    z = np.abs(m1 - m2) / np.hypot(s1, s2)
    assert np.max(z[:4]) > 10  # phi components come first in `flat`


def test_stl_gradient_is_zero_at_exact_posterior(lg):
    model, x, _, theta = lg
    mean, cov = model.posterior_params(x)
    tri = jnp.broadcast_to(jnp.linalg.cholesky(cov), (2, 2, 2))

    def surrogate(loc, scale_tri, key):
        return vie.elbo_stl(
            key, model.log_joint_fn(x), distrax.MultivariateNormalTri(loc, scale_tri), 8
        ).sum()

    for seed in range(3):
        g_loc, g_tri = jax.grad(surrogate, (0, 1))(mean, tri, jax.random.key(seed))
        np.testing.assert_allclose(g_loc, 0.0, atol=100 * EPS)
        np.testing.assert_allclose(g_tri, 0.0, atol=100 * EPS)
    # the plain pathwise estimator is not zero there (only its expectation is).
    g_tri_pw = jax.grad(
        lambda t: vie.elbo_pathwise(
            jax.random.key(0), model.log_joint_fn(x), distrax.MultivariateNormalTri(mean, t), 1
        ).sum()
    )(tri)
    assert np.max(np.abs(g_tri_pw)) > 1e-2


def _phi_variance(grads):
    return flat(grads[0])


def test_score_function_has_more_variance_than_pathwise(lg):
    model, x, phi, theta = lg
    pw = _grad_samples(vie.elbo_pathwise, model, x, phi, theta, 1, 2000)
    sf = _grad_samples(vie.elbo_score_function, model, x, phi, theta, 1, 2000)
    assert_variance_less(_phi_variance(pw), _phi_variance(sf), what="pathwise < score function")


def test_baselines_reduce_score_function_variance(lg):
    model, x, phi, theta = lg
    exact_elbo = model.elbo(x, phi["loc"], jax.vmap(jnp.diag)(jnp.exp(phi["log_scale"])))
    none = _grad_samples(vie.elbo_score_function, model, x, phi, theta, 4, 2000)
    fixed = _grad_samples(
        functools.partial(vie.elbo_score_function, baseline=exact_elbo),
        model,
        x,
        phi,
        theta,
        4,
        2000,
    )
    loo = _grad_samples(vie.elbo_score_function_loo, model, x, phi, theta, 4, 2000)
    assert_variance_less(_phi_variance(fixed), _phi_variance(none), what="baseline")
    assert_variance_less(_phi_variance(loo), _phi_variance(none), what="leave-one-out")


def test_dreg_has_less_encoder_variance_than_iwae_at_large_k(lg):
    model, x, phi, theta = lg
    k = 64
    iw = _grad_samples(vie.iwae_pathwise, model, x, phi, theta, k, 1000)
    dreg = _grad_samples(vie.iwae_dreg, model, x, phi, theta, k, 1000)
    assert_variance_less(_phi_variance(dreg), _phi_variance(iw), what="DReG < IWAE (phi)")
    # and theta gradients are identical in distribution: same formula, same samples
    np.testing.assert_allclose(flat(dreg[1]), flat(iw[1]), rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------ discrete latents


@pytest.fixture(scope="module")
def discrete():
    model = vie.make_binary_latent_gaussian(
        jax.random.key(4), data_dim=5, latent_dim=3, noise_scale=0.9
    )
    x, _ = model.sample(jax.random.key(5), 1)
    x = x[0]
    logits = jnp.asarray([0.3, -0.5, 0.8], x.dtype)
    support = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=3)), x.dtype)  # [8, 3]
    return model, x, logits, support


def _bern(logits):
    return distrax.Independent(distrax.Bernoulli(logits=logits, dtype=logits.dtype), 1)


def test_pathwise_refuses_discrete_q(discrete):
    model, x, logits, _ = discrete
    for est in (vie.elbo_pathwise, vie.elbo_stl, vie.iwae_pathwise, vie.iwae_dreg):
        with pytest.raises(TypeError, match="not reparameterisable"):
            est(jax.random.key(0), model.log_joint_fn(x), _bern(logits), 2)
    assert not vie.is_reparameterized(_bern(logits))
    assert vie.is_reparameterized(distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2)))


def _discrete_grads(est, model, x, logits, k, n, seed=0):
    def one(key):
        return jax.grad(lambda lg_: est(key, model.log_joint_fn(x), _bern(lg_), k))(logits)

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), n))


def test_score_function_exact_on_enumerable_model(discrete):
    model, x, logits, support = discrete
    lj = model.log_joint_fn(x)

    def exact_elbo(logit):
        q = _bern(logit)
        return jnp.sum(jnp.exp(q.log_prob(support)) * (lj(support) - q.log_prob(support)))

    exact = jax.grad(exact_elbo)(logits)
    for est in (vie.elbo_score_function, vie.elbo_score_function_loo):
        assert_unbiased(_discrete_grads(est, model, x, logits, 3, 4000), exact, what=est.__name__)


def test_vimco_exact_on_enumerable_model(discrete):
    model, x, logits, support = discrete
    lj = model.log_joint_fn(x)
    k = 3
    tuples = jnp.asarray(list(itertools.product(range(8), repeat=k)))  # [512, K]

    def exact_iwae(logit):
        q = _bern(logit)
        log_w = lj(support) - q.log_prob(support)  # [8]
        log_q = q.log_prob(support)
        lw = log_w[tuples]  # [512, K]
        bound = jax.nn.logsumexp(lw, axis=1) - math.log(k)
        return jnp.sum(jnp.exp(jnp.sum(log_q[tuples], axis=1)) * bound)

    exact = jax.grad(exact_iwae)(logits)
    g = _discrete_grads(vie.vimco, model, x, logits, k, 6000)
    assert_unbiased(g, exact, what="vimco")
    # and the estimated bound itself is unbiased for E[L_K]
    vals = jax.vmap(lambda key: vie.vimco(key, lj, _bern(logits), k))(
        jax.random.split(jax.random.key(9), 4000)
    )
    assert_unbiased(vals, exact_iwae(logits), what="vimco value")


def test_estimators_work_for_amortised_and_free_parameters(lg):
    """One call, two parameterisations: an encoder's output and free per-datum params."""
    model, x, phi, theta = lg
    enc = {"w": jnp.zeros((4, 2)) + 0.1, "c": jnp.zeros(2), "s": jnp.zeros(2)}

    def amortised(enc, key, est):
        q = distrax.MultivariateNormalDiag(
            x @ enc["w"] + enc["c"], jnp.exp(enc["s"]) * jnp.ones((2, 2))
        )
        return est(key, model.log_joint_fn(x), q, 4).mean()

    for name, est in vie.ESTIMATORS.items():
        g = jax.jit(jax.grad(amortised), static_argnums=2)(enc, jax.random.key(0), est)
        assert all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves(g)), name
        gf = jax.grad(lambda p: est(jax.random.key(0), model.log_joint_fn(x), _q(p), 4).mean())(phi)
        assert gf["loc"].shape == (2, 2), name
    # vmap over data with per-datum q (batch shape [])
    per = jax.vmap(
        lambda xi, loc, s: vie.iwae_dreg(
            jax.random.key(0),
            model.log_joint_fn(xi),
            distrax.MultivariateNormalDiag(loc, jnp.exp(s)),
            4,
        )
    )(x, phi["loc"], phi["log_scale"])
    assert per.shape == (2,)


def test_refusals(lg):
    model, x, phi, theta = lg
    lj, q, key = model.log_joint_fn(x), _q(phi), jax.random.key(0)
    with pytest.raises(ValueError, match="num_samples"):
        vie.vimco(key, lj, q, 1)
    with pytest.raises(ValueError, match="num_samples"):
        vie.elbo_score_function_loo(key, lj, q, 1)
    with pytest.raises(ValueError, match="num_samples"):
        vie.iwae_dreg(key, lj, q, 0)
    with pytest.raises(ValueError, match="baseline"):
        vie.elbo_score_function(key, lj, q, 2, baseline=jnp.nan)
    with pytest.raises(ValueError, match="baseline"):
        vie.elbo_score_function(key, lj, q, 2, baseline=jnp.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="decay"):
        vie.update_moving_average(0.0, 1.0, decay=1.0)
    np.testing.assert_allclose(
        vie.update_moving_average(jnp.asarray(1.0), jnp.asarray(3.0), 0.5), 2.0
    )


class TestPathOnlyEstimatorsVanish(chex.TestCase):
    """With one latent the exact posterior is a diagonal Gaussian: the phi gradient of
    STL/DReG is exactly zero (a regression test: a stop-gradient *copy* of a distrax
    MultivariateNormalDiag still leaks the score term through its bijector), with and
    without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("elbo_stl", "iwae_stl", "iwae_dreg")
    def test_at_exact_meanfield_posterior(self, name):
        estimator = getattr(vie, name)
        model = vie.make_linear_gaussian(
            jax.random.key(0), data_dim=3, latent_dim=1, noise_scale=0.5
        )
        x, _ = model.sample(jax.random.key(1), 2)
        mean, cov = model.posterior_params(x)
        phi = {"loc": mean, "log_scale": jnp.log(jnp.sqrt(jnp.diag(cov)))[None].repeat(2, 0)}

        @self.variant
        def grad(key, p):
            return jax.grad(lambda p: estimator(key, model.log_joint_fn(x), _q(p), 4).sum())(p)

        for seed in range(3):
            g = grad(jax.random.key(seed), phi)
            np.testing.assert_allclose(
                flat(jax.tree_util.tree_map(lambda a: a[None], g)), 0.0, atol=100 * EPS
            )
