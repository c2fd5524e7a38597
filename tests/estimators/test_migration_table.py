"""The README's "Coming from optax.monte_carlo" table, executed row by row.

Each row's vi_jax call is run on one shared example and compared with what the optax
call computed: optax's removed formulas (google-deepmind/optax, ca35e20b^,
optax/monte_carlo/*.py and optax/_src/utils.py) are reimplemented inline below as the
reference. Where both draw the same samples the numbers agree to rounding; the
measure-valued estimator draws its auxiliary variables differently, so there the two
means agree within 4 standard errors of their difference.
"""

from __future__ import annotations

import math
import pathlib
import re

import jax
import jax.numpy as jnp
import jax.scipy.stats.norm as norm
import numpy as np
import pytest

import vi_jax as vj

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
KEY = jax.random.key(3)
PARAMS = [jnp.array([0.3, -0.5, 1.2]), jnp.array([-0.2, 0.1, -0.6])]  # loc, log-scale
K = 64
sg = jax.lax.stop_gradient


def f(x):
    """The shared example: smooth, not polynomial, couples the coordinates."""
    return jnp.sum(jnp.sin(x)) + x[0] * x[1] ** 2


# ------------------------------------------------------------- optax's formulas, inline


def optax_sample(params, key, n):  # utils.MultiNormalDiagFromLogScale.sample
    return jax.random.normal(key, (n, 3)) * jnp.exp(params[1]) + params[0]


def optax_log_prob(params, x):
    return jnp.sum(norm.logpdf(x, loc=params[0], scale=jnp.exp(params[1])), axis=-1)


def optax_score_function_jacobians(function, params, rng, n):
    def surrogate(params):
        samples = sg(optax_sample(params, rng, n))
        return jax.vmap(lambda x: function(x) * optax_log_prob(params, x))(samples)

    return jax.jacfwd(surrogate)(params)


def optax_pathwise_jacobians(function, params, rng, n):
    return jax.jacfwd(lambda p: jax.vmap(function)(optax_sample(p, rng, n)))(params)


def optax_measure_valued_jacobians(function, params, rng, n):  # coupling=True
    mean, std = params[0], jnp.exp(params[1])
    samples = optax_sample(params, rng, n)
    pos_rng, neg_rng = jax.random.split(rng)

    def diag_set(values):  # N x D x D: samples with the diagonal replaced by values
        tiled = jnp.ones_like(samples)[:, None, :] * samples[:, :, None]
        tiled = jnp.swapaxes(tiled, 1, 2)
        eye = jnp.eye(3, dtype=bool)
        return jnp.where(eye, values[:, :, None] * jnp.ones(3), tiled)

    vf = jax.vmap(jax.vmap(function))
    w = jax.random.weibull_min(pos_rng, scale=math.sqrt(2.0), concentration=2.0, shape=(n, 3))
    g_mean = (vf(diag_set(mean + std * w)) - vf(diag_set(mean - std * w))) / (
        math.sqrt(2 * math.pi) * std
    )
    m = jax.random.double_sided_maxwell(pos_rng, loc=0.0, scale=1.0, shape=(n, 3))
    u = jax.random.uniform(neg_rng, (n, 3))
    g_std = (vf(diag_set(mean + std * m)) - vf(diag_set(mean + std * u * m))) / std
    return [g_mean, std * g_std]


def optax_delta(function):  # control_variates.control_delta_method
    def delta(params, x):
        mu = params[0]
        dx = x - mu
        return function(mu) + dx @ jax.grad(function)(mu) + dx @ jax.hessian(function)(mu) @ dx / 2

    def expected(params):
        mu, var = params[0], jnp.exp(params[1]) ** 2
        return function(mu) + jnp.sum(var * jnp.diag(jax.hessian(function)(mu))) / 2

    return delta, expected


def optax_moving_avg_update(state, observation, decay, zero_debias, heuristic):
    value, i = state
    d = min(decay, (1.0 + i) / (10.0 + i)) if heuristic else decay
    value = d * value + (1 - d) * observation
    if zero_debias:
        value /= 1.0 - d ** (i + 1)
    return value, i + 1


def optax_coefficients(function, params, rng, n):  # estimate_control_variate_coefficients
    cv_rng, _ = jax.random.split(rng)
    delta, _ = optax_delta(function)
    j_h = optax_score_function_jacobians(lambda x: delta(params, x), params, cv_rng, n)
    j_f = optax_score_function_jacobians(function, params, cv_rng, n)
    out = []
    for jh, jf in zip(j_h, j_f, strict=True):
        cov = jnp.mean((jf - jf.mean(0)) * (jh - jh.mean(0)), axis=0)
        out.append(jnp.sum(cov) / (jnp.sum(jnp.var(jh, axis=0)) + 1e-3))
    return out


def optax_control_variates_jacobians(function, params, rng, n):  # delta, SF, coeff 1
    delta, expected = optax_delta(function)
    j_f = optax_score_function_jacobians(function, params, rng, n)
    j_h = optax_score_function_jacobians(lambda x: delta(sg(params), x), params, rng, n)
    samples = optax_sample(params, rng, n)
    param_grads = jax.grad(lambda p: jnp.mean(jax.vmap(lambda x: delta(p, x))(sg(samples))))(params)
    expected_grads = jax.grad(expected)(params)
    return [
        jf - jh - pg + eg
        for jf, jh, pg, eg in zip(j_f, j_h, param_grads, expected_grads, strict=True)
    ]


# ----------------------------------------------------------------------------- the rows


def _jit(fn):
    """fn(PARAMS), compiled once (cheaper than running these graphs op by op)."""
    return jax.jit(fn)(PARAMS)


def _close(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-5)


def _within_4se(a, b):
    for x, y in zip(a, b, strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        se = np.hypot(x.std(0, ddof=1), y.std(0, ddof=1)) / math.sqrt(x.shape[0])
        assert np.all(np.abs(x.mean(0) - y.mean(0)) < 4 * se), (x.mean(0), y.mean(0), se)


def row_score_function_jacobians():
    ours = _jit(
        lambda p: vj.estimators.score_function_jacobians(
            KEY, f, p, vj.estimators.diag_normal_log_scale, K
        )
    )
    _close(ours, _jit(lambda p: optax_score_function_jacobians(f, p, KEY, K)))


def row_pathwise_jacobians():
    ours = _jit(
        lambda p: vj.estimators.pathwise_jacobians(
            KEY, f, p, vj.estimators.diag_normal_log_scale, K
        )
    )
    _close(ours, _jit(lambda p: optax_pathwise_jacobians(f, p, KEY, K)))

    # ... and what `elbo_pathwise` computes instead: grad (E[f] + H[q]), the log-scale
    # gradients off by the entropy's d H / d log-scale = +1.
    def elbo(params):
        q = vj.estimators.diag_normal_log_scale(params)
        return vj.elbo_pathwise(KEY, lambda z: jax.vmap(f)(z), q, K)

    grads = _jit(jax.grad(elbo))
    np.testing.assert_allclose(grads[1], np.mean(ours[1], 0) + 1.0, rtol=1e-4, atol=1e-4)


def row_measure_valued_jacobians():
    n = 20000

    def both(p):
        ours = vj.estimators.measure_valued_param_jacobians(
            KEY, f, p, vj.estimators.diag_normal_log_scale, n
        )
        optax = optax_measure_valued_jacobians(f, p, jax.random.key(4), n)
        # The (loc, scale) form: scale gradients, times the scale for log-scale ones.
        g_loc, g_scale = vj.estimators.measure_valued_jacobians(KEY, f, p[0], jnp.exp(p[1]), n)
        return ours, optax, (g_loc, g_scale * jnp.exp(p[1]))

    ours, optax, loc_scale = _jit(both)
    _within_4se(ours, optax)
    _close(loc_scale, ours)
    with pytest.raises(ValueError, match="`scale`"):
        vj.estimators.measure_valued_jacobians(KEY, f, PARAMS[0], PARAMS[1], n)  # a log-scale


def row_control_delta_method():
    delta, expected = optax_delta(f)
    q = vj.estimators.diag_normal_log_scale(PARAMS)
    cv = vj.estimators.control_delta(f)(q)
    x = optax_sample(PARAMS, KEY, 5)
    _close([jax.vmap(cv.function)(x)], [jax.vmap(lambda x: delta(PARAMS, x))(x)])
    _close([cv.expectation(q)], [expected(PARAMS)])


def row_moving_avg_baseline():
    observations = [6.0, 2.0, 5.0]
    for zero_debias in (False, True):
        state, optax_state = (
            vj.estimators.MovingAverage.init(
                decay=0.99, zero_debias=zero_debias, early_decay_heuristic=True
            ),
            (0.0, 0),
        )
        for step, obs in enumerate(observations):
            state = state.update(obs)
            optax_state = optax_moving_avg_update(optax_state, obs, 0.99, zero_debias, True)
            # Without debiasing every step agrees; with it only the first does (optax
            # re-debiased its debiased value afterwards).
            if not zero_debias or step == 0:
                np.testing.assert_allclose(state.value(), optax_state[0], rtol=1e-6)
    # the correct debiased value: the weighted mean of the observations
    weights = np.array([0.9 * (2 / 11) * (3 / 12), (9 / 11) * (3 / 12), 9 / 12])
    np.testing.assert_allclose(state.value(), weights @ observations / weights.sum(), rtol=1e-5)


def row_control_variates_jacobians():
    ours = _jit(lambda p: vj.estimators.control_variates_jacobians(
        KEY, f, vj.estimators.control_delta(f), vj.estimators.score_function_jacobians, p,
        vj.estimators.diag_normal_log_scale, 4000,
    ))  # fmt: skip
    optax = _jit(lambda p: optax_control_variates_jacobians(f, p, KEY, 4000))
    # The log-scale rows agree exactly; the mean rows differ by a zero-mean term (optax
    # added the sample mean of grad_theta h to every row, vi_jax holds h's parameters).
    _close(ours[1:], optax[1:])
    _within_4se(ours[:1], optax[:1])


def row_estimate_control_variate_coefficients():
    cv_key = jax.random.split(KEY)[0]  # optax split its rng internally
    ours = _jit(lambda p: vj.estimators.estimate_control_variate_coefficients(
        cv_key, f, vj.estimators.control_delta(f), vj.estimators.score_function_jacobians, p,
        vj.estimators.diag_normal_log_scale, 20,
    ))  # fmt: skip
    _close(ours, _jit(lambda p: optax_coefficients(f, p, KEY, 20)))


ROWS = {
    "score_function_jacobians": row_score_function_jacobians,
    "pathwise_jacobians": row_pathwise_jacobians,
    "measure_valued_jacobians": row_measure_valued_jacobians,
    "control_delta_method": row_control_delta_method,
    "moving_avg_baseline": row_moving_avg_baseline,
    "control_variates_jacobians": row_control_variates_jacobians,
    "estimate_control_variate_coefficients": row_estimate_control_variate_coefficients,
}


def _table_rows() -> list[str]:
    text = README.read_text()
    section = text[text.index("### Coming from `optax.monte_carlo`") :]
    section = section[: section.index("\n## ")]
    return re.findall(r"^\| `([a-z_]+)[(`]", section, re.M)


def test_every_row_is_checked():
    assert sorted(_table_rows()) == sorted(ROWS)


@pytest.mark.parametrize("row", ROWS)
def test_row(row):
    ROWS[row]()
