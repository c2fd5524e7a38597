import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_utils import assert_unbiased, mean_and_stderr

from vi_jax.estimators import _logspace
from vi_jax.estimators import importance as imp
from vi_jax.estimators.enumeration import binary_support, enumerate_log_marginal
from vi_jax.estimators.importance import (
    LogMarginalEstimate,
    importance_log_marginal,
    snis_expectation,
    uniform_log_marginal,
)
from vi_jax.estimators.problems import make_binary_latent_gaussian, make_linear_gaussian

F32 = jnp.zeros(()).dtype == jnp.float32
EPS = 1e-5 if F32 else 1e-10


@pytest.fixture(scope="module")
def problem():
    """Linear Gaussian z ~ N(0, I_2), x | z ~ N(W z + b, 0.6^2 I_5), 3 data points.

    The proposal is shifted off the posterior mean and, in every direction, wider than
    the posterior (scale 1.2 x its largest standard deviation), so the weights are
    bounded and have finite variance: the statistical tests below are valid.
    """
    model = make_linear_gaussian(jax.random.key(0), data_dim=5, latent_dim=2, noise_scale=0.6)
    x, _ = model.sample(jax.random.key(1), 3)
    mean, cov = model.posterior_params(x)
    sd = math.sqrt(float(np.linalg.eigvalsh(np.asarray(cov)).max()))
    q = distrax.MultivariateNormalDiag(mean + 0.3, jnp.full_like(mean, 1.2 * sd))
    return model, x, q, np.asarray(model.log_marginal(x), np.float64)


def _keys(seed, n):
    """n keys for the many-repetition statistical checks. They use the "rbg" generator:
    much cheaper to compile than threefry under vmap, and it shows that the estimators
    work with any key implementation (the other tests use the default threefry)."""
    return jax.random.split(jax.random.key(seed, impl="rbg"), n)


# --------------------------------------------------------------------- importance sampling
# XLA compilation dominates the run time of these tests, so each test compiles one or two
# programs that compute everything it checks.


@pytest.fixture(scope="module")
def runs(problem):
    """Estimates over 2000 keys: K = 10, K = 10 in chunks of 5, K = 100 in chunks of 25."""
    model, x, q, _ = problem
    lj = model.log_joint_fn(x)

    def all_runs(keys):
        def one(key):
            k1, k2, k3 = jax.random.split(key, 3)
            return {
                "10": importance_log_marginal(k1, lj, q, 10)[:2],
                "10 chunked": importance_log_marginal(k2, lj, q, 10, chunk_size=5)[:2],
                "100 chunked": importance_log_marginal(k3, lj, q, 100, chunk_size=25)[:2],
            }

        return jax.vmap(one)(keys)

    return jax.jit(all_runs)(_keys(2, 2000))


def test_estimate_of_p_x_is_unbiased_in_linear_space(problem, runs):
    truth = problem[-1]
    for k, (log_marginal, _) in runs.items():
        assert log_marginal.shape == (2000, 3)
        ratio = np.exp(np.asarray(log_marginal, np.float64) - truth)
        assert_unbiased(ratio, np.ones(3), what=f"IS estimate of p(x), K={k}")


def test_log_estimate_is_below_truth_and_tightens_with_k(problem, runs):
    truth = problem[-1]
    (m10, s10), (m100, s100) = (mean_and_stderr(runs[k][0]) for k in ("10", "100 chunked"))
    # Jensen: E[log estimate] <= log p(x), strictly for small K
    assert np.all(m10 + 4 * s10 < truth) and np.all(m100 - 4 * s100 < truth)
    # the gap shrinks as K grows (roughly as 1/K)
    assert np.all(m10 + 4 * np.hypot(s10, s100) < m100)
    assert np.all(truth - m100 < 0.1 * (truth - m10) + 4 * s100)


def test_reported_stderr_matches_the_spread_across_keys(problem, runs):
    truth = problem[-1]
    # With K = 100 the reported stderr (std of the weights / sqrt(K); low-biased by a few
    # percent for skewed weights, much more for K ~ 10) matches the observed sd of the
    # estimate over 2000 keys, itself known to a few percent.
    log_marginal, log_stderr = runs["100 chunked"]
    spread = np.std(np.exp(np.asarray(log_marginal, np.float64) - truth), axis=0, ddof=1)
    reported = np.mean(np.exp(np.asarray(log_stderr, np.float64) - truth), axis=0)
    np.testing.assert_allclose(reported, spread, rtol=0.1)


def test_chunked_and_unchunked_estimators_agree_in_distribution(runs):
    # Same K, same proposal: the two estimators have the same distribution.
    for i in (0, 1):  # log_marginal, log_stderr
        m1, s1 = mean_and_stderr(runs["10"][i])
        m2, s2 = mean_and_stderr(runs["10 chunked"][i])
        assert np.all(np.abs(m1 - m2) < 4 * np.hypot(s1, s2)), i


def test_streaming_moments_equal_direct_computation():
    # Deterministic: merge the moments of chunks of fixed log-weights as the scan does.
    lw = np.random.default_rng(9).normal(size=(103, 4)) * 10.0
    lw[:50, 1] = -np.inf  # zero weights in the first chunks
    lw[:, 2] = -np.inf  # all zero
    lw[:, 3] = 7.0  # all equal
    lw = jnp.asarray(lw, jnp.zeros(()).dtype)
    state = imp._empty_moments((4,), lw.dtype)
    for start in range(0, 103, 10):  # ten chunks of 10 and a remainder of 3
        state = imp._merge(state, imp._chunk_moments(lw[start : start + 10]))
    log_mean, log_se = imp._finish(state, 103)
    direct_mean, direct_se = _logspace.log_mean_exp_nan_aware(lw), _logspace.log_stderr_of_mean(lw)
    np.testing.assert_allclose(log_mean, direct_mean, rtol=1e-5)
    np.testing.assert_allclose(log_se[:2], direct_se[:2], rtol=1e-4)
    assert log_mean[2] == -np.inf and log_se[2] == -np.inf and direct_se[2] == -np.inf
    # equal weights: no spread (up to rounding in the mean)
    assert np.all(np.exp(np.array([log_se[3], direct_se[3]]) - 7.0) < 1e-12)


def test_exact_posterior_proposal_gives_exact_value_for_every_sample(problem):
    model, x, _, truth = problem
    post = model.posterior(x)
    lj = model.log_joint_fn(x)

    @jax.jit
    def everything(key):
        return (
            importance_log_marginal(key, lj, post, 16),
            importance_log_marginal(key, lj, post, 16, chunk_size=5),  # remainder 1
            importance_log_marginal(key, lj, post, 1),
        )

    est, chunked, one = everything(jax.random.key(8))
    tol = dict(rtol=EPS, atol=50 * EPS)
    np.testing.assert_allclose(est.log_weights, np.broadcast_to(truth, (16, 3)), **tol)
    for e in (est, chunked):
        np.testing.assert_allclose(e.log_marginal, truth, **tol)
        assert np.all(np.exp(e.log_stderr - e.log_marginal) < 100 * EPS)  # ~zero variance
    assert chunked.log_weights is None
    assert np.all(one.log_stderr == np.inf)  # K = 1: nothing is known about the spread


def test_all_zero_weights_give_minus_inf_and_finite_gradients(problem):
    model, x, q, _ = problem

    def lj(z, b):
        value = model._replace(bias=b).log_joint_fn(x)(z)
        return value.at[:, 0].set(-jnp.inf)  # datum 0: p(x, z) = 0 everywhere

    def objective(b, chunk):
        est = importance_log_marginal(
            jax.random.key(12), lambda z: lj(z, b), q, 8, chunk_size=chunk
        )
        return est.log_marginal[1:].sum(), est

    @jax.jit
    def everything(b):
        grads = [jax.value_and_grad(objective, has_aux=True)(b, c) for c in (None, 3)]
        return grads, snis_expectation(jax.random.key(12), lambda z: z, lambda z: lj(z, b), q, 8)

    grads, snis = everything(model.bias)
    for (_, est), g in grads:
        assert est.log_marginal[0] == -np.inf and est.log_stderr[0] == -np.inf
        assert np.all(np.isfinite(est.log_marginal[1:]))
        assert np.all(np.isfinite(g)) and np.any(g != 0)
    assert np.all(np.isnan(snis.estimate[0])) and snis.ess[0] == 0


def test_jit_vmap_over_data_and_grad_wrt_proposal(problem):
    model, x, q, truth = problem
    lj = model.log_joint_fn(x)
    mean, cov = model.posterior_params(x)
    chol = jnp.linalg.cholesky(cov)

    def per_datum(xi, mi):  # one datum, an unbatched proposal: its exact posterior
        post = distrax.MultivariateNormalTri(mi, chol)
        return importance_log_marginal(
            jax.random.key(14), model.log_joint_fn(xi), post, 8, chunk_size=4
        ).log_marginal

    def objective(loc, log_scale, chunk):
        qq = distrax.MultivariateNormalDiag(loc, jnp.exp(log_scale))
        return importance_log_marginal(
            jax.random.key(15), lj, qq, 32, chunk_size=chunk
        ).log_marginal.sum()

    @jax.jit
    def everything(loc, log_scale):
        grads = [jax.value_and_grad(objective, (0, 1))(loc, log_scale, c) for c in (None, 8)]
        return jax.vmap(per_datum)(x, mean), grads

    per, grads = everything(q.loc, jnp.log(q.scale_diag))
    # vmap over data points
    np.testing.assert_allclose(per, truth, rtol=EPS, atol=50 * EPS)
    # grad w.r.t. the proposal's parameters is finite (the pathwise IWAE gradient)
    for _, g in grads:
        assert all(np.all(np.isfinite(gi)) and np.any(gi != 0) for gi in g)
    # the jitted value equals the eager one (same key, same samples)
    eager = importance_log_marginal(jax.random.key(15), lj, q, 32)
    np.testing.assert_allclose(grads[0][0], eager.log_marginal.sum(), rtol=1e-5)


# --------------------------------------------------------------------- uniform (naive MC)
def test_uniform_on_finite_support_equals_enumeration():
    model = make_binary_latent_gaussian(
        jax.random.key(16), data_dim=4, latent_dim=4, noise_scale=1.5
    )
    x, _ = model.sample(jax.random.key(17), 2)
    lj = model.log_joint_fn(x)
    support = binary_support(4)
    exact = np.asarray(enumerate_log_marginal(lj, support, batch_shape=(2,)), np.float64)

    def objective(b, key):
        lj_b = model._replace(bias=b).log_joint_fn(x)
        return uniform_log_marginal(key, lj_b, support, 16, batch_shape=(2,)).log_marginal

    @jax.jit
    def everything(b, keys):
        big = uniform_log_marginal(jax.random.key(18), lj, support, 20_000, batch_shape=(2,))
        many = jax.vmap(lambda k: objective(b, k))(keys)  # vmap over keys
        return big, many, jax.grad(lambda b: objective(b, keys[0]).sum())(b)

    est, many, g = everything(model.bias, _keys(19, 1000))
    assert isinstance(est, LogMarginalEstimate) and est.log_weights.shape == (20_000, 2)
    rel_err = np.abs(np.exp(np.asarray(est.log_marginal, np.float64) - exact) - 1)
    assert np.all(rel_err < 4 * np.exp(np.asarray(est.log_stderr, np.float64) - exact))
    ratio = np.exp(np.asarray(many, np.float64) - exact)
    assert_unbiased(ratio, np.ones(2), what="uniform MC")
    assert np.all(np.isfinite(g))


def test_uniform_on_a_box_matches_closed_form():
    # 1-D latent; the prior mass outside [-8, 8] is ~1e-15, negligible
    model = make_linear_gaussian(jax.random.key(21), data_dim=3, latent_dim=1, noise_scale=1.0)
    x, _ = model.sample(jax.random.key(22), 2)
    truth = np.asarray(model.log_marginal(x), np.float64)
    low, high = jnp.array([-8.0]), jnp.array([8.0])

    def per_datum(key, xi, high, k):  # one datum: batch_shape ()
        return uniform_log_marginal(key, model.log_joint_fn(xi), (low, high), k)

    @jax.jit
    def everything(high, keys):
        big = jax.vmap(per_datum, (None, 0, None, None))(keys[0], x, high, 20_000)
        many = jax.vmap(
            lambda k: jax.vmap(per_datum, (None, 0, None, None))(k, x, high, 64).log_marginal
        )(keys)
        grad = jax.grad(
            lambda h: jax.vmap(per_datum, (None, 0, None, None))(
                keys[0], x, h, 64
            ).log_marginal.sum()
        )(high)
        return big, many, grad

    big, many, g = everything(high, _keys(23, 1000))
    assert big.log_marginal.shape == (2,) and big.log_weights.shape == (2, 20_000)
    rel_err = np.abs(np.exp(np.asarray(big.log_marginal, np.float64) - truth) - 1)
    assert np.all(rel_err < 4 * np.exp(np.asarray(big.log_stderr, np.float64) - truth))
    assert_unbiased(np.exp(np.asarray(many, np.float64) - truth), np.ones(2), what="box MC")
    assert np.all(np.isfinite(g)) and np.all(g != 0)
    # batched call (batch_shape) on the same data
    batched = uniform_log_marginal(
        jax.random.key(24), model.log_joint_fn(x), (low, high), 64, batch_shape=(2,)
    )
    assert batched.log_weights.shape == (64, 2)


# --------------------------------------------------------------------- SNIS
def test_snis_posterior_mean(problem):
    model, x, q, _ = problem
    lj = model.log_joint_fn(x)
    post_mean, post_cov = model.posterior_params(x)
    post = model.posterior(x)

    def outer(z):  # E[z z^T | x]: values [K, *batch, 2, 2]
        return z[..., :, None] * z[..., None, :]

    # exact posterior as proposal: all weights equal, ESS = K, estimate = sample mean
    est = snis_expectation(jax.random.key(27), outer, lj, post, 64)  # eager
    assert est.estimate.shape == (3, 2, 2) and est.ess.shape == (3,)
    np.testing.assert_allclose(est.ess, 64.0, rtol=1e-4)
    z = post.sample(seed=jax.random.key(27), sample_shape=(64,))
    np.testing.assert_allclose(est.estimate, outer(z).mean(0), rtol=1e-4, atol=1e-5)

    @jax.jit
    def everything(loc, keys):
        qq = distrax.MultivariateNormalDiag(loc, q.scale_diag)
        same = snis_expectation(jax.random.key(27), outer, lj, post, 64)
        many = jax.vmap(lambda k: snis_expectation(k, lambda z: z, lj, qq, 1000))(keys)
        grad = jax.grad(
            lambda m: snis_expectation(
                keys[0],
                lambda z: z[..., 0],
                lj,
                distrax.MultivariateNormalDiag(m, q.scale_diag),
                50,
            ).estimate.sum()
        )(loc)
        # vmap over data: one datum and its exact (unbatched) posterior each
        chol = jnp.linalg.cholesky(post_cov)
        per = jax.vmap(
            lambda xi, mi: snis_expectation(
                keys[1],
                lambda z: z,
                model.log_joint_fn(xi),
                distrax.MultivariateNormalTri(mi, chol),
                32,
            )
        )(x, post_mean)
        return same, many, grad, per

    same, many, g, per = everything(q.loc, _keys(28, 200))
    assert per.estimate.shape == (3, 2)
    np.testing.assert_allclose(per.ess, 32.0, rtol=1e-4)
    np.testing.assert_allclose(same.estimate, est.estimate, rtol=1e-5)  # jit == eager
    # off-posterior proposal: consistent; its O(1/K) bias (~1e-3 here) is well below the
    # standard error over 200 keys, so the repetitions look unbiased (vmap over keys)
    assert many.estimate.shape == (200, 3, 2) and many.ess.shape == (200, 3)
    assert np.all((many.ess > 1) & (many.ess < 1000))
    assert_unbiased(many.estimate, post_mean, what="SNIS posterior mean")
    assert np.all(np.isfinite(g))


# --------------------------------------------------------------------- refusals
def test_refusals_name_the_argument(problem):
    model, x, q, _ = problem
    lj = model.log_joint_fn(x)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_samples"):
        importance_log_marginal(key, lj, q, 0)
    with pytest.raises(TypeError, match="num_samples"):
        importance_log_marginal(key, lj, q, 5.0)
    with pytest.raises(ValueError, match="num_samples"):
        uniform_log_marginal(key, lj, binary_support(2), 0)
    with pytest.raises(ValueError, match="num_samples"):
        snis_expectation(key, lambda z: z, lj, q, -1)
    with pytest.raises(ValueError, match="chunk_size"):
        importance_log_marginal(key, lj, q, 5, chunk_size=0)
    with pytest.raises(TypeError, match="proposal"):
        importance_log_marginal(key, lj, "q", 5)
    with pytest.raises(ValueError, match="proposal"):
        importance_log_marginal(key, lj, distrax.MultivariateNormalDiag(q.loc * jnp.nan), 5)
    with pytest.raises(TypeError, match="log_joint"):
        importance_log_marginal(key, None, q, 5)
    with pytest.raises(ValueError, match="log_joint"):
        importance_log_marginal(key, lambda z: jnp.sum(z, (-2, -1)), q, 5)  # [K], not [K, 3]
    with pytest.raises(ValueError, match="`f`"):
        snis_expectation(key, lambda z: jnp.sum(z), lj, q, 5)
    with pytest.raises(ValueError, match="support_or_box"):
        uniform_log_marginal(key, lj, (jnp.zeros(2), jnp.zeros(2)), 5, batch_shape=(3,))
    with pytest.raises(ValueError, match="support_or_box"):
        uniform_log_marginal(key, lj, (jnp.zeros(2), jnp.ones(3)), 5, batch_shape=(3,))
    with pytest.raises(ValueError, match="support_or_box"):
        uniform_log_marginal(key, lj, (jnp.zeros(2), jnp.array([1.0, jnp.inf])), 5)
    with pytest.raises(ValueError, match="support_or_box"):
        uniform_log_marginal(key, lj, jnp.array([[0.0, jnp.nan]]), 5, batch_shape=(3,))
    with pytest.raises(ValueError, match="support_or_box"):
        uniform_log_marginal(key, lj, (jnp.zeros(2),), 5)
