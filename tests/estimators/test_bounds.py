import functools

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_utils import assert_unbiased, mean_and_stderr

import vi_jax.estimators as vie

EPS = 1e-4 if jnp.zeros(()).dtype == jnp.float32 else 1e-9


@pytest.fixture(scope="module")
def problem():
    model = vie.make_linear_gaussian(jax.random.key(0), data_dim=5, latent_dim=2, noise_scale=0.6)
    x, _ = model.sample(jax.random.key(1), 3)  # [3, 5]
    post_mean, post_cov = model.posterior_params(x)
    # a mean-field q, deliberately off the posterior: batch [3], event [2]
    loc = post_mean + 0.3
    scale = jnp.sqrt(jnp.diag(post_cov))[None].repeat(3, 0) * 1.3
    return model, x, loc, scale


def _q(loc, scale):
    return distrax.MultivariateNormalDiag(loc, scale)


def _exact_elbo(model, x, loc, scale):
    return model.elbo(x, loc, jax.vmap(jnp.diag)(scale))


def _many(fn, n, seed=0):
    """Evaluates fn(key) for n keys in one compiled vmap -> [n, ...]."""
    return jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), n))


@pytest.mark.parametrize("form", ["log_ratio", "entropy", "entropy_mc", "kl", "kl_mc"])
def test_three_elbo_forms_are_unbiased_for_exact_elbo(problem, form):
    model, x, loc, scale = problem
    q = _q(loc, scale)
    fns = {
        "log_ratio": lambda k: vie.elbo(k, model.log_joint_fn(x), q, 4),
        "entropy": lambda k: vie.elbo_entropy(k, model.log_joint_fn(x), q, 4),
        "entropy_mc": lambda k: vie.elbo_entropy(k, model.log_joint_fn(x), q, 4, entropy="mc"),
        "kl": lambda k: vie.elbo_kl(k, model.log_likelihood_fn(x), q, model.prior(), 4),
        "kl_mc": lambda k: vie.elbo_kl(k, model.log_likelihood_fn(x), q, model.prior(), 4, kl="mc"),
    }
    samples = _many(fns[form], 3000)
    assert samples.shape == (3000, 3)
    assert_unbiased(samples, _exact_elbo(model, x, loc, scale), what=form)


def test_monte_carlo_kl_is_unbiased_for_closed_form(problem):
    model, x, loc, scale = problem
    q = _q(loc, scale)
    exact = vie.kl_divergence(jax.random.key(0), q, model.prior())
    mc = _many(lambda k: vie.kl_divergence(k, q, model.prior(), 3, method="mc"), 3000)
    assert_unbiased(mc, exact, what="MC KL")
    assert np.all(np.var(mc, 0) > 0)
    # Note: the *total* ELBO estimate is not always less variable with the closed-form KL:
    # the MC KL shares samples with the reconstruction term and can act as a control variate.


def test_elbo_equals_log_marginal_at_exact_posterior(problem):
    model, x, _, _ = problem
    post = model.posterior(x)
    values = vie.elbo(jax.random.key(3), model.log_joint_fn(x), post, 64)
    log_w = vie.log_weights(jax.random.key(3), model.log_joint_fn(x), post, 64)[1]
    np.testing.assert_allclose(
        log_w, jnp.broadcast_to(model.log_marginal(x), log_w.shape), atol=50 * EPS, rtol=EPS
    )
    np.testing.assert_allclose(values, model.log_marginal(x), atol=50 * EPS, rtol=EPS)
    # also the exact ELBO formula with a full-rank q
    mean, cov = model.posterior_params(x)
    tri = jnp.broadcast_to(jnp.linalg.cholesky(cov), (3, 2, 2))
    np.testing.assert_allclose(
        model.elbo(x, mean, tri), model.log_marginal(x), atol=50 * EPS, rtol=EPS
    )


def test_iwae_increases_with_k_towards_log_marginal(problem):
    model, x, loc, scale = problem
    q = _q(loc, 2.0 * scale)
    truth = np.asarray(model.log_marginal(x))
    means = []
    for k in (1, 5, 50, 500):
        vals = _many(lambda key: vie.iwae_bound(key, model.log_joint_fn(x), q, k), 1000, seed=k)
        m, se = mean_and_stderr(vals)
        assert np.all(m - 4 * se <= truth), f"IWAE_{k} above log p(x)"
        means.append((m, se))
    for (m1, s1), (m2, s2) in zip(means[:-1], means[1:], strict=True):
        assert np.all(m2 - m1 > -4 * np.hypot(s1, s2))
    assert np.all(means[-1][0] - means[0][0] > 4 * np.hypot(means[0][1], means[-1][1]))
    # the gap shrinks: L_500 is within 0.05 nats of log p(x) here.
    assert np.all(np.abs(means[-1][0] - truth) < 0.05)


@pytest.mark.parametrize(
    "bound",
    [
        lambda k, lj, q: vie.elbo(k, lj, q, 3),
        lambda k, lj, q: vie.iwae_bound(k, lj, q, 10),
        lambda k, lj, q: vie.renyi_bound(k, lj, q, 10, alpha=0.5),
    ],
    ids=["elbo", "iwae", "renyi0.5"],
)
def test_lower_bounds_are_below_log_marginal_on_average(problem, bound):
    model, x, loc, scale = problem
    vals = _many(lambda k: bound(k, model.log_joint_fn(x), _q(loc, scale)), 2000)
    m, se = mean_and_stderr(vals)
    assert np.all(m - 4 * se <= np.asarray(model.log_marginal(x)))


def test_renyi_limits(problem):
    model, x, loc, scale = problem
    q, lj, key = _q(loc, scale), model.log_joint_fn(x), jax.random.key(7)
    np.testing.assert_allclose(
        vie.renyi_bound(key, lj, q, 16, alpha=0.0), vie.iwae_bound(key, lj, q, 16), rtol=1e-6
    )
    np.testing.assert_allclose(
        vie.renyi_bound(key, lj, q, 16, alpha=1.0), vie.elbo(key, lj, q, 16), rtol=1e-6
    )
    np.testing.assert_allclose(
        vie.renyi_bound(key, lj, q, 16, alpha=1.0 - 1e-3), vie.elbo(key, lj, q, 16), rtol=1e-3
    )
    # monotone in alpha for a fixed sample set (Li & Turner 2016, Thm 1)
    vals = [vie.renyi_bound(key, lj, q, 16, alpha=a) for a in (-1.0, 0.0, 0.5, 1.0, 2.0)]
    for a, b in zip(vals[:-1], vals[1:], strict=True):
        assert np.all(np.asarray(a) >= np.asarray(b) - 1e-5)


def test_cubo_sandwiches_log_marginal(problem):
    model, x, loc, scale = problem
    q = _q(loc - 0.3, 2.0 * scale)  # wider than the posterior: E_q[w^2] is finite
    key = jax.random.key(11)
    truth = np.asarray(model.log_marginal(x))
    upper = vie.cubo(key, model.log_joint_fn(x), q, 20000)
    lower = vie.elbo(key, model.log_joint_fn(x), q, 20000)
    assert np.all(np.asarray(lower) < truth) and np.all(truth < np.asarray(upper))
    np.testing.assert_allclose(
        vie.cubo(key, model.log_joint_fn(x), q, 50, n=1.0),
        vie.iwae_bound(key, model.log_joint_fn(x), q, 50),
        rtol=1e-6,
    )


def test_all_minus_inf_weights_give_minus_inf_not_nan():
    q = distrax.MultivariateNormalDiag(jnp.zeros((2, 3)), jnp.ones((2, 3)))
    lj = lambda z: jnp.full(z.shape[:-1], -jnp.inf)  # noqa: E731
    key = jax.random.key(0)
    for v in (
        vie.elbo(key, lj, q, 4),
        vie.iwae_bound(key, lj, q, 4),
        vie.renyi_bound(key, lj, q, 4, alpha=0.5),
        vie.cubo(key, lj, q, 4),
        vie.iwae_dreg(key, lj, q, 4),
        vie.vimco(key, lj, q, 4),
    ):
        assert np.all(np.isneginf(np.asarray(v))), v


def test_jit_vmap_grad(problem):
    model, x, loc, scale = problem
    key = jax.random.key(0)

    @functools.partial(jax.jit, static_argnames="k")
    def f(key, loc, scale, k):
        return vie.iwae_bound(key, model.log_joint_fn(x), _q(loc, scale), k)

    assert f(key, loc, scale, k=5).shape == (3,)
    # vmap over data: per-datum q with batch shape [] and x [5]
    per_datum = jax.vmap(lambda xi, li, si: vie.elbo(key, model.log_joint_fn(xi), _q(li, si), 2))
    assert per_datum(x, loc, scale).shape == (3,)
    # grad: the bound's pathwise gradient is finite and non-zero
    g = jax.grad(lambda lg_: vie.elbo(key, model.log_joint_fn(x), _q(lg_, scale), 2).sum())(loc)
    assert g.shape == loc.shape and np.all(np.isfinite(g)) and np.any(g != 0)
    for fn in (
        lambda k, q: vie.renyi_bound(k, model.log_joint_fn(x), q, 4, alpha=0.3),
        lambda k, q: vie.cubo(k, model.log_joint_fn(x), q, 4),
        lambda k, q: vie.elbo_entropy(k, model.log_joint_fn(x), q, 4),
        lambda k, q: vie.elbo_kl(k, model.log_likelihood_fn(x), q, model.prior(), 4),
    ):
        out = jax.jit(jax.vmap(lambda k: fn(k, _q(loc, scale))))(jax.random.split(key, 3))
        assert out.shape == (3, 3) and np.all(np.isfinite(out))
        gl = jax.grad(lambda lg_: fn(key, _q(lg_, scale)).sum())(loc)
        assert np.all(np.isfinite(gl))


def test_refusals(problem):
    model, x, loc, scale = problem
    q, lj, key = _q(loc, scale), model.log_joint_fn(x), jax.random.key(0)
    with pytest.raises(ValueError, match="num_samples"):
        vie.elbo(key, lj, q, 0)
    with pytest.raises(TypeError, match="num_samples"):
        vie.iwae_bound(key, lj, q, 2.5)
    with pytest.raises(TypeError, match="log_joint"):
        vie.elbo(key, "not a function", q, 1)
    with pytest.raises(TypeError, match="`q`"):
        vie.elbo(key, lj, (loc, scale), 1)
    with pytest.raises(ValueError, match="log_joint"):
        vie.elbo(key, lambda z: jnp.sum(z), q, 2)  # wrong output shape
    with pytest.raises(ValueError, match="alpha"):
        vie.renyi_bound(key, lj, q, 2, alpha=float("nan"))
    with pytest.raises(ValueError, match="`n`"):
        vie.cubo(key, lj, q, 2, n=0.5)
    with pytest.raises(ValueError, match="entropy"):
        vie.elbo_entropy(key, lj, q, 2, entropy="closed")
    laplace = distrax.Independent(distrax.Laplace(jnp.zeros(2), jnp.ones(2)), 1)
    with pytest.raises(ValueError, match="analytic"):
        vie.kl_divergence(key, q, laplace, method="analytic")
    # the Monte Carlo fallback works where the closed form is missing
    assert vie.kl_divergence(key, q, laplace, 8).shape == (3,)


class TestBoundsAtTheExactPosterior(chex.TestCase):
    """With q = p(z | x) every log-weight is log p(x): every bound, and every gradient
    estimator's surrogate value, equals log p(x) for each sample, with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_every_bound_is_log_marginal(self):
        k = 3
        model = vie.make_linear_gaussian(
            jax.random.key(0), data_dim=5, latent_dim=2, noise_scale=0.6
        )
        x, _ = model.sample(jax.random.key(1), 3)

        @self.variant
        def all_bounds(key):
            lj, post = model.log_joint_fn(x), model.posterior(x)
            out = {
                "elbo": vie.elbo(key, lj, post, k),
                "iwae": vie.iwae_bound(key, lj, post, k),
                "renyi": vie.renyi_bound(key, lj, post, k, alpha=0.5),
                "cubo": vie.cubo(key, lj, post, k),
                "elbo_pathwise": vie.elbo_pathwise(key, lj, post, k),
                "iwae_dreg": vie.iwae_dreg(key, lj, post, k),
                "vimco": vie.vimco(key, lj, post, k),
            }
            return out

        truth = model.log_marginal(x)
        for name, value in all_bounds(jax.random.key(7)).items():
            assert value.shape == (3,), name
            np.testing.assert_allclose(value, truth, atol=50 * EPS, rtol=EPS, err_msg=name)
