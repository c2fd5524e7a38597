"""optax.monte_carlo's own last test suite, run against vi_jax through the README's table.

Ported from google-deepmind/optax at a02de840^ ("Trimming the library", 2025-06-30, the
commit that deleted the tests): `optax/monte_carlo/stochastic_gradient_estimators_test.py`
and `optax/monte_carlo/control_variates_test.py`. Every case (distributions, functions,
sample counts, keys `jax.random.key(1)`, expected values and tolerances) is optax's,
with the calls the README's "Coming from optax.monte_carlo" table names:

    optax (f, params, dist_builder, rng, K)  ->  vi_jax (key, f, params, dist_builder, K)
    utils.multi_normal(loc, log_scale)       ->  diag_normal_log_scale((loc, log_scale))

Deliberate changes, each marked "CHANGED" below:
- Tolerances. optax's `_assert_equal(actual, expected, rtol, atol)` accepts
  |actual - expected| <= atol + rtol |expected|. Several of those bands are about one
  standard error of the estimator wide, so that optax's own code fails them for other
  seeds. Every check here accepts max(optax's band, 4 s.e.), the s.e. computed from the
  per-sample Jacobians themselves (for a difference of two independent estimates,
  sqrt(se1^2 + se2^2)). `WIDENED` lists the cases where the 4-s.e. band is the wider
  one on these seeds (VI_JAX_PRINT_WIDENED=1 prints them; checks are "mean" and
  "log_scale" leaves):
    test_constant_function[score_function-0.9] mean, log_scale;
    test_linear_function[score_function-0.5--1.0] mean, log_scale;
    test_linear_function[score_function|pathwise|measure_valued-0.7-0.0, -0.8-0.1] log_scale;
    test_quadratic_function[score_function] log_scale;
    test_weighted_linear[score_function-case_1, case_2, case_3] mean;
    test_weighted_linear[score_function-case_2, case_3; pathwise|measure_valued-case_3]
      log_scale;
    test_weighted_quadratic[score_function-case_1, 2, 3; pathwise-case_2, 3] log_scale;
    test_delta_method_analytical_expected_grads[cubic-score_function-*] log_scale;
    test_consistency_weighted_linear_function[*-control_delta_method,
      score_function-moving_avg_baseline] log_scale;
    test_consistency_non_polynomial_function[score_function-control_delta_method] log_scale;
    the moving-average "update" and "zero debias: on" checks.
- optax's E[x^4] mean-gradient expectation was 3 mu^3 + 12 mu sigma^2; d/dmu of
  E[x^4] = mu^4 + 6 mu^2 sigma^2 + 3 sigma^4 is 4 mu^3 + 12 mu sigma^2.
- The moving-average baseline is read *before* being updated with this step's samples
  (optax updated it with the same samples first, which biases the estimator); the
  consistency tests update it with independent draws instead.
- `chex.all_variants` (jit / no-jit / device placement) is not repeated here: these run
  eagerly; jit, vmap and grad of each function are tested in test_jacobians.py,
  test_control_variates.py and test_baselines.py.
- Sample counts above 10^6 are cut to 10^6 (5 * 10^6 for optax's weighted
  score-function cases) to stay within the suite's CPU budget; the 4-s.e. rule
  accounts for it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi_jax as vj

SF, PW, MV = (
    vj.estimators.score_function_jacobians,
    vj.estimators.pathwise_jacobians,
    vj.estimators.measure_valued_param_jacobians,
)
ESTIMATORS = {"score_function": SF, "pathwise": PW, "measure_valued": MV}
KEY = jax.random.key(1)
BUILDER = vj.estimators.diag_normal_log_scale

NUM_SAMPLES = {"score_function": 5 * 10**5, "measure_valued": 10**5, "pathwise": 5 * 10**4}
WEIGHTED_NUM_SAMPLES = {
    "score_function": 10**6,  # CHANGED: optax used 5 * 10**6 (see the module docstring).
    "measure_valued": 5 * 10**5,
    "pathwise": 5 * 10**4,
}

# The checks whose 4-s.e. band is wider than optax's on these seeds are collected here;
# VI_JAX_PRINT_WIDENED=1 prints them after the run (the module docstring lists them).
_WIDENED: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def _print_widened():
    yield
    if os.environ.get("VI_JAX_PRINT_WIDENED"):
        print("\nwidened to 4 s.e.:", *sorted(_WIDENED), sep="\n  ")


def _assert_equal(name, actual, expected, se, *, rtol=1e-2, atol=1e-2):
    """optax's check, |actual - expected| <= atol + rtol |expected|, widened to 4 s.e."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    optax_band = atol + rtol * np.abs(expected)
    band = np.maximum(optax_band, 4 * np.asarray(se, np.float64))
    if np.any(band > optax_band):
        _WIDENED.add(name)
    err = np.abs(actual - expected)
    assert np.all(err <= band), f"{name}: {actual} vs {expected}, error {err} > {band}"


# Compilation dominates the cost of these tests, so each optax test's cases run through
# one compiled function (its functions written as one family with traced coefficients,
# all estimators at once) that returns only what the checks need: per leaf the mean of
# the per-sample Jacobians and its standard error.


def _summary(jacobians, num_samples, dims):
    def one(jac):
        # optax's chex.assert_shape(jacobians, (num_samples, data_dims)).
        assert jac.shape == (num_samples, dims), jac.shape
        return jac.mean(0), jac.std(0, ddof=1) / math.sqrt(num_samples)

    return [one(j) for j in jacobians]


def _check(name, summary, expected, **tol):
    for leaf, (mean, se), exp in zip(("mean", "log_scale"), summary, expected, strict=True):
        _assert_equal(f"{name} {leaf}", mean, exp, se, **tol)


def _check_close(name, summary_a, summary_b, rtols, atol):
    """Two independent estimates agree: optax's band or 4 s.e. of their difference."""
    for leaf, (ma, sa), (mb, sb), rtol in zip(
        ("mean", "log_scale"), summary_a, summary_b, rtols, strict=True
    ):
        _assert_equal(f"{name} {leaf}", ma, mb, np.hypot(sa, sb), rtol=rtol, atol=atol)


def _params(mean, log_scale, dims=None):
    mean, log_scale = jnp.asarray(mean, jnp.float32), jnp.asarray(log_scale, jnp.float32)
    if dims is not None:
        mean, log_scale = mean * jnp.ones(dims), log_scale * jnp.ones(dims)
    return [mean, log_scale]


# ================================================ stochastic_gradient_estimators_test


def _polynomial(x, theta):
    """c + w1.x + s sum(x^2) + q (w2.x)^2: every function of optax's polynomial tests."""
    c, w1, s, q, w2 = theta
    return c + jnp.dot(w1, x) + s * jnp.sum(x**2) + q * jnp.dot(w2, x) ** 2


def _theta(c=0.0, w1=(0.0, 0.0, 0.0), s=0.0, q=0.0, w2=(0.0, 0.0, 0.0)):
    return tuple(jnp.asarray(v, jnp.float32) for v in (c, w1, s, q, w2))


@functools.cache
def _polynomial_runner(num_samples: tuple[tuple[str, int], ...]):
    @jax.jit
    def run(key, params, theta):
        f = functools.partial(_polynomial, theta=theta)
        return {
            name: _summary(ESTIMATORS[name](key, f, params, BUILDER, k), k, 3)
            for name, k in num_samples
        }

    return run


@functools.cache
def _polynomial_results(weighted: bool, mean, log_scale, theta_kw):
    ks = WEIGHTED_NUM_SAMPLES if weighted else NUM_SAMPLES
    params = _params(mean, log_scale, None if weighted else 3)
    return _polynomial_runner(tuple(ks.items()))(KEY, params, _theta(**dict(theta_kw)))


@pytest.mark.parametrize("constant", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_constant_function(estimator, constant, request):
    # optax: f = lambda x: jnp.array(constant); mean 1.5, log-scale 0.
    result = _polynomial_results(False, 1.5, 0.0, (("c", constant),))[estimator]
    zeros = np.zeros(3)
    _check(request.node.name, result, (zeros, zeros), atol=5e-3)


@pytest.mark.parametrize("mean,log_scale", [(0.5, -1.0), (0.7, 0.0), (0.8, 0.1)])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_linear_function(estimator, mean, log_scale, request):
    # optax: f = np.sum.
    result = _polynomial_results(False, mean, log_scale, (("w1", (1.0, 1.0, 1.0)),))
    _check(request.node.name, result[estimator], (np.ones(3), np.zeros(3)))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_quadratic_function(estimator, request):
    # optax: f = lambda x: np.sum(x**2) / 2.
    mean, log_scale = 1.0, 0.3
    result = _polynomial_results(False, mean, log_scale, (("s", 0.5),))[estimator]
    expected = (mean * np.ones(3), np.exp(2 * log_scale) * np.ones(3))
    _check(request.node.name, result, expected, atol=5e-2)


WEIGHTED_LINEAR = {
    "case_1": ((1.0, 2.0, 3.0), (-1.0, 0.3, -2.0), (1.0, 1.0, 1.0)),
    "case_2": ((1.0, 2.0, 3.0), (-1.0, 0.3, -2.0), (4.0, 2.0, 3.0)),
    "case_3": ((1.0, 2.0, 3.0), (0.1, 0.2, 0.1), (10.0, 5.0, 1.0)),
}


@pytest.mark.parametrize("case", WEIGHTED_LINEAR)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_weighted_linear(estimator, case, request):
    # optax: f = lambda x: jnp.sum(x * weights).
    mean, log_scale, weights = WEIGHTED_LINEAR[case]
    result = _polynomial_results(True, mean, log_scale, (("w1", weights),))[estimator]
    _check(request.node.name, result, (np.asarray(weights), np.zeros(3)), atol=5e-2)


WEIGHTED_QUADRATIC = {
    "case_1": ((1.0, 2.0, 3.0), (-1.0, 0.3, -2.0), (1.0, 1.0, 1.0)),
    "case_2": ((1.0, 2.0, 3.0), (-1.0, 0.3, -2.0), (4.0, 2.0, 3.0)),
    "case_3": ((1.0, 2.0, 3.0), (0.1, 0.2, 0.1), (3.0, 5.0, 1.0)),
}


@pytest.mark.parametrize("case", WEIGHTED_QUADRATIC)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_weighted_quadratic(estimator, case, request):
    # optax: f = lambda x: jnp.sum(x * weights) ** 2.
    mean, log_scale, weights = WEIGHTED_QUADRATIC[case]
    result = _polynomial_results(True, mean, log_scale, (("q", 1.0), ("w2", weights)))
    mean, weights, scale = np.asarray(mean), np.asarray(weights), np.exp(log_scale)
    expected = (2 * weights * np.sum(weights * mean), 2 * weights**2 * scale * scale)
    _check(request.node.name, result[estimator], expected, atol=1e-1, rtol=1e-1)


def _non_polynomial(x, theta):
    """a sum(cos(b x)) + c sum(log x) + d cos(e sum(x)): optax's four functions."""
    a, b, c, d, e = theta
    # |x|: the log term is switched off (c = 0) where x may be negative.
    return (
        a * jnp.sum(jnp.cos(b * x)) + c * jnp.sum(jnp.log(jnp.abs(x))) + d * jnp.cos(e * jnp.sum(x))
    )


NON_POLYNOMIAL = {  # mean, log-scale, (a, b, c, d, e)
    "sum_cos_x": ((1.0,), (1.0,), (1.0, 1.0, 0.0, 0.0, 0.0)),
    # optax: "Need to ensure that the mean is not too close to 0."
    "sum_log_x": ((10.0,), (0.0,), (0.0, 0.0, 1.0, 0.0, 0.0)),
    "sum_cos_2x": ((1.0, 2.0), (1.0, -2.0), (1.0, 2.0, 0.0, 0.0, 0.0)),
    "cos_sum_2x": ((1.0, 2.0), (1.0, -2.0), (0.0, 0.0, 0.0, 1.0, 2.0)),
}


@functools.cache
def _non_polynomial_runner(dims: int):
    k = 10**5

    @jax.jit
    def run(key, params, theta):
        measure_key, pathwise_key = jax.random.split(key)
        f = functools.partial(_non_polynomial, theta=theta)
        return {
            "pathwise": _summary(PW(pathwise_key, f, params, BUILDER, k), k, dims),
            "coupling": _summary(MV(measure_key, f, params, BUILDER, k, coupling=True), k, dims),
            "nocoupling": _summary(MV(measure_key, f, params, BUILDER, k, coupling=False), k, dims),
        }

    return run


@functools.cache
def _non_polynomial_results(case):
    mean, log_scale, theta = NON_POLYNOMIAL[case]
    theta = tuple(jnp.float32(v) for v in theta)
    return _non_polynomial_runner(len(mean))(KEY, _params(mean, log_scale), theta)


@pytest.mark.parametrize("coupling", ["coupling", "nocoupling"])
@pytest.mark.parametrize("case", NON_POLYNOMIAL)
def test_non_polynomial_function_consistency_with_pathwise(case, coupling, request):
    result = _non_polynomial_results(case)
    name = request.node.name
    _check_close(name, result["pathwise"], result[coupling], rtols=(5e-1, 5e-1), atol=1e-1)


@pytest.mark.parametrize("coupling", [True, False])
def test_measure_valued_raises_error_for_non_gaussian(coupling):
    def builder(params):
        return distrax.Laplace(params[0], jnp.exp(params[1]))

    with pytest.raises(ValueError, match="`dist_builder`"):
        MV(KEY, lambda x: jnp.sum(x) ** 2, _params(0.0, 0.0), builder, 10**5, coupling=coupling)


# ======================================================================= control_variates


def _samples(params, k):
    return BUILDER(params).sample(seed=KEY, sample_shape=(k,))


def test_delta_quadratic_function():
    params, k = _params(1.0, 0.5, 20), 10**6

    @jax.jit
    def run(key, params):
        function = lambda x: jnp.sum(x**2)  # noqa: E731
        q = BUILDER(params)
        cv = vj.estimators.control_delta(function)(q)
        samples = q.sample(seed=key, sample_shape=(k,))
        f = jnp.sum(samples**2, axis=1)
        return jax.vmap(cv.function)(samples).mean(), cv.expectation(q), f.mean(), f.std()

    h_mean, exact, f_mean, f_std = run(KEY, params)
    # optax: "This should be an analytical computation, the result needs to be accurate."
    # (h = f for a quadratic f: the two sample means agree to rounding.)
    _assert_equal("delta quadratic: cv", h_mean, f_mean, 0.0, rtol=1e-1, atol=1e-3)
    se = f_std / math.sqrt(k)
    _assert_equal("delta quadratic: expectation", exact, f_mean, se, rtol=0.02, atol=0.0)


def test_delta_polynomial_and_non_polynomial_functions():
    params, k = _params(1.0, 1.0, 10), 10**3

    @jax.jit
    def run(key, params):
        q, out = BUILDER(params), {}
        samples = q.sample(seed=key, sample_shape=(k,))
        for name, function in (
            ("polynomial", lambda x: jnp.sum(x**5)),
            ("non_polynomial", lambda x: jnp.sum(jnp.log(x**2))),
        ):
            cv = vj.estimators.control_delta(function)(q)
            h = jax.vmap(cv.function)(samples)
            out[name] = h.mean(), h.std(ddof=1) / math.sqrt(k), cv.expectation(q)
        return out

    out = run(KEY, params)
    for name, (h_mean, h_se, exact) in out.items():
        # optax: the sample mean of the control variate is close to its expectation.
        _assert_equal(f"delta {name}: cv", h_mean, exact, h_se, rtol=1e-1, atol=1e-3)
    # optax: "Second order expansion is log(mu**2) + 1/2 * sigma**2 (-2 / mu**2)".
    exact = out["non_polynomial"][2]
    _assert_equal(
        "delta non_polynomial: closed form", exact, -(math.e**2) * 10, 0.0, rtol=1e-1, atol=1e-3
    )


WEIGHTS = jnp.array([1.0, 2.0, 3.0])


def _weighted_sum(x):
    return jnp.sum(WEIGHTS * x)


def _moving_average(start, count, decay, heuristic, zero_debias=False):
    state = vj.estimators.MovingAverage.init(
        decay=decay,
        zero_debias=zero_debias,
        early_decay_heuristic=heuristic,
        initial_value=start,
    )
    return dataclasses.replace(state, count=jnp.asarray(count, jnp.int32))


@functools.cache
def _weighted_sum_draws(k):
    f = jax.vmap(_weighted_sum)(_samples(_params(1.0, 0.5, 3), k))
    return f.mean(), float(f.std(ddof=1)) / math.sqrt(k), float(_weighted_sum(jnp.ones(3)))


@pytest.mark.parametrize("decay", [0.9, 0.99])
@pytest.mark.parametrize("heuristic", [False, True])
def test_moving_average_linear_function(decay, heuristic):
    # optax: 10**4 samples without the heuristic, 10**5 with it.
    f_sample_mean, f_se, f_mean = _weighted_sum_draws(10**5 if heuristic else 10**4)
    for start, count in ((1.0, 0), (2.0, 1 if heuristic else 0)):
        state = _moving_average(start, count, decay, heuristic)
        # The baseline (optax: the control variate and its expectation) is the average.
        _assert_equal("moving average: value", state.value(), start, 0.0)
        # optax's expected decays: min(decay, (1 + i) / (10 + i)) = 0.1 and 2 / 11.
        d = (1.0 / 10 if count == 0 else 2.0 / 11) if heuristic else decay
        np.testing.assert_allclose(float(state.step_decay()), d, rtol=1e-6)
        updated = state.update(f_sample_mean).value()
        expected = d * start + (1 - d) * f_mean
        _assert_equal("moving average: update", updated, expected, (1 - d) * f_se)


@pytest.mark.parametrize("decay", [0.9, 0.99])
def test_moving_average_linear_function_zero_debias(decay):
    f_sample_mean, f_se, f_mean = _weighted_sum_draws(10**5)
    plain = _moving_average(0.0, 0, decay, False, zero_debias=False).update(f_sample_mean)
    _assert_equal("zero debias: off", plain.value(), (1 - decay) * f_mean, (1 - decay) * f_se)
    debiased = _moving_average(0.0, 0, decay, False, zero_debias=True).update(f_sample_mean)
    _assert_equal("zero debias: on", debiased.value(), f_mean, f_se)


def test_moving_average_debiasing_is_right_where_optax_was_wrong():
    """optax re-debiased its stored, already debiased value: 6, 31.6, 107 from 0 with a
    constant observation 6 at decay 0.9 (its formula, reproduced here); the weighted mean
    of three 6s is 6."""
    optax_values, value = [], 0.0
    for i in range(3):
        value = (0.9 * value + 0.1 * 6.0) / (1.0 - 0.9 ** (i + 1))
        optax_values.append(value)
    np.testing.assert_allclose(optax_values, [6.0, 31.58, 107.1], rtol=1e-3)
    state, ours = vj.estimators.MovingAverage.init(decay=0.9), []
    for _ in range(3):
        state = state.update(6.0)
        ours.append(float(state.value()))
    np.testing.assert_allclose(ours, [6.0, 6.0, 6.0], rtol=1e-6)


def _power(x, theta):
    """theta . (sum x^2, sum x^3, sum x^4): optax's three delta-method functions."""
    return theta[0] * jnp.sum(x**2) + theta[1] * jnp.sum(x**3) + theta[2] * jnp.sum(x**4)


@functools.cache
def _power_runner(dims, k):
    @jax.jit
    def run(key, params, theta):
        f = functools.partial(_power, theta=theta)
        return {
            (name, estimate): _summary(
                vj.estimators.control_variates_jacobians(
                    key,
                    f,
                    vj.estimators.control_delta(f),
                    est,
                    params,
                    BUILDER,
                    k,
                    coefficients="estimate" if estimate else 1.0,
                ),
                k,
                dims,
            )  # fmt: skip
            for name, est in ESTIMATORS.items()
            for estimate in (True, False)
        }

    return run


@functools.cache
def _power_results(power):
    dims, k = (3, 10**3) if power == 2 else (1, 10**5)
    theta = jnp.asarray([power == 2, power == 3, power == 4], jnp.float32)
    return _power_runner(dims, k)(KEY, _params(1.0, 1.0, dims), theta), dims


def _expected_power_grads(power, mu, sigma):
    """d/d(mu, log sigma) of E[x^power], x ~ N(mu, sigma^2)."""
    if power == 2:  # E = mu^2 + sigma^2
        return 2 * mu, 2 * sigma**2
    if power == 3:  # E = mu^3 + 3 mu sigma^2
        return 3 * mu**2 + 3 * sigma**2, 6 * mu * sigma**2
    # E = mu^4 + 6 mu^2 sigma^2 + 3 sigma^4. CHANGED: optax's mean gradient was
    # 3 mu^3 + 12 mu sigma^2 (91.7 here, hidden by its rtol 0.1); d/dmu is 4 mu^3 + 12 mu sigma^2.
    return 4 * mu**3 + 12 * mu * sigma**2, 12 * (mu**2 * sigma + sigma**3) * sigma


@pytest.mark.parametrize(
    "estimate", [True, False], ids=["estimate_cv_coeffs", "no_estimate_cv_coeffs"]
)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("power", [2, 3, 4], ids=["quadratic", "cubic", "forth_power"])
def test_delta_method_analytical_expected_grads(power, estimator, estimate, request):
    # optax: mean 1, log-scale 1; sum(x^2) with 3 dims and 10**3 samples, sum(x^3) and
    # sum(x^4) with 1 dim and 10**5 samples.
    result, dims = _power_results(power)
    g_mu, g_ls = _expected_power_grads(power, 1.0, math.e)
    expected = (g_mu * np.ones(dims), g_ls * np.ones(dims))
    _check(request.node.name, result[estimator, estimate], expected, rtol=1e-1, atol=1e-3)


def _baseline(function, params):
    # optax: state (0.0, 0), updated inside the call with that call's own samples (its
    # early-training heuristic made the baseline their mean f, a baseline that depends on
    # the samples). CHANGED: the same mean from independent draws.
    draws = BUILDER(params).sample(seed=jax.random.key(2), sample_shape=(10**4,))
    state = vj.estimators.MovingAverage.init(early_decay_heuristic=True)
    return state.update(jnp.mean(jax.vmap(function)(draws)))


def _log_sum_sq(x):
    return jnp.log(jnp.sum(x**2))


@functools.cache
def _consistency_runner(function, k_delta, k_baseline):
    @jax.jit
    def run(key, params, baseline):
        cv_key, ge_key = jax.random.split(key)
        out = {}
        for name, est in ESTIMATORS.items():
            for cv, control, k in (
                ("control_delta_method", vj.estimators.control_delta(function), k_delta),
                ("moving_avg_baseline", baseline, k_baseline),
            ):
                jac = vj.estimators.control_variates_jacobians(
                    cv_key, function, control, est, params, BUILDER, k
                )
                # optax: "a different random number generator for the gradient estimator
                # without the control variate".
                no_cv = est(ge_key, function, params, BUILDER, k)
                out[name, cv] = _summary(jac, k, 3), _summary(no_cv, k, 3)
        return out

    return run


@functools.cache
def _consistency_results(which):
    params = _params(1.0, 1.0, 3)
    if which == "weighted_linear":
        function, ks = _weighted_sum, (10**5, 10**6)
    else:
        function, ks = _log_sum_sq, (10**5, 10**5)
    return _consistency_runner(function, *ks)(KEY, params, _baseline(function, params))


@pytest.mark.parametrize("cv", ["control_delta_method", "moving_avg_baseline"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_consistency_weighted_linear_function(estimator, cv, request):
    # optax: 10**5 samples with the delta method, 10**6 with the baseline.
    jac, no_cv = _consistency_results("weighted_linear")[estimator, cv]
    _check_close(request.node.name, jac, no_cv, rtols=(1e-1, 1.0), atol=5e-2)


@pytest.mark.parametrize("cv", ["control_delta_method", "moving_avg_baseline"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_consistency_non_polynomial_function(estimator, cv, request):
    jac, no_cv = _consistency_results("non_polynomial")[estimator, cv]
    _check_close(request.node.name, jac, no_cv, rtols=(1e-1, 1e-1), atol=5e-2)
