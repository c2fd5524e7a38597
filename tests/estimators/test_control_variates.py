"""Unbiasedness and variance reduction of score-function control variates."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import pytest

from vi_jax.estimators import control_variates as cv

LOC = jnp.array([0.5, -1.0])
SCALE = jnp.array([0.8, 0.6])
NUM_KEYS = 4000


def _sin(z):
    return jnp.sum(jnp.sin(z))


def _grads(estimator, **kw):
    def one(key):
        def surrogate(params):
            q = distrax.MultivariateNormalDiag(params[0], params[1])
            return estimator(key, _sin, q, 4, **kw)

        return jax.grad(surrogate)((LOC, SCALE))

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(0), NUM_KEYS))


TRUE = (
    jnp.cos(LOC) * jnp.exp(-(SCALE**2) / 2),
    -SCALE * jnp.sin(LOC) * jnp.exp(-(SCALE**2) / 2),
)


def test_control_delta_unbiased_and_lower_variance():
    plain = _grads(cv.with_control_variate)
    delta = _grads(cv.score_function_control_delta)
    for g in (plain, delta):
        for gi, truth in zip(g, TRUE, strict=True):
            stderr = gi.std(0) / jnp.sqrt(NUM_KEYS)
            assert jnp.all(jnp.abs(gi.mean(0) - truth) < 4 * stderr + 1e-5)
    assert jnp.sum(delta[0].var(0)) < 0.5 * jnp.sum(plain[0].var(0))


def test_control_delta_expectation_closed_form():
    q = distrax.MultivariateNormalDiag(LOC, SCALE)
    var = cv.control_delta(lambda z: jnp.sum(z**2), q)
    # for a quadratic f, h = f: E[sum z^2] = sum mu^2 + s^2
    assert jnp.allclose(var.expectation(q), jnp.sum(LOC**2 + SCALE**2), rtol=1e-5)
    z = jnp.array([0.3, 0.1])
    assert jnp.allclose(var.function(z), jnp.sum(z**2), rtol=1e-5)


def test_value_and_moving_average():
    q = distrax.MultivariateNormalDiag(LOC, SCALE)
    value = cv.score_function_control_delta(jax.random.PRNGKey(1), _sin, q, 20000)
    assert jnp.abs(value - jnp.sum(jnp.sin(LOC) * jnp.exp(-(SCALE**2) / 2))) < 0.03
    state = cv.moving_average_init()
    b, state = jax.jit(cv.moving_average_baseline)(state, jnp.asarray(2.0))
    assert jnp.allclose(b, 2.0)
    b, state = cv.moving_average_baseline(state, jnp.asarray(4.0), 0.5)
    assert int(state.count) == 2 and 2.0 < float(b) < 4.0


def test_refusals():
    q = distrax.MultivariateNormalDiag(LOC, SCALE)
    with pytest.raises(ValueError, match="`num_samples`"):
        cv.with_control_variate(jax.random.PRNGKey(0), _sin, q, 0)
    with pytest.raises(ValueError, match="`decay`"):
        cv.moving_average_baseline(cv.moving_average_init(), 1.0, decay=1.0)
    with pytest.raises(TypeError, match="`function`"):
        cv.control_delta(None, q)


# ------------------------------------------- per-sample Jacobians with control variates

PARAMS = (LOC, jnp.log(SCALE))


def test_control_delta_is_reexpanded_or_refuses_a_stale_q():
    q, other = (
        distrax.MultivariateNormalDiag(LOC, SCALE),
        distrax.MultivariateNormalDiag(LOC + 1.0, SCALE),
    )
    fixed = cv.control_delta(_sin, q)
    with pytest.raises(ValueError, match="`control_variate`"):
        cv.with_control_variate(jax.random.PRNGKey(0), _sin, other, 4, control_variate=fixed)
    # the factory expands at the q it is given: h(mean) = f(mean)
    h = cv.control_delta(_sin)(other)
    assert jnp.allclose(h.function(other.mean()), _sin(other.mean()))
    with pytest.raises(TypeError, match="`control_variate`"):
        cv.with_control_variate(jax.random.PRNGKey(0), _sin, q, 4, control_variate=3.0)


def test_control_variates_jacobians_jit_vmap_grad_and_estimate_identity():
    from vi_jax.estimators import jacobians as jac

    def run(key, params, coefficients):
        return cv.control_variates_jacobians(
            key, _sin, cv.control_delta(_sin), jac.score_function_jacobians, params,
            jac.diag_normal_log_scale, 8, coefficients=coefficients,
        )  # fmt: skip

    key = jax.random.PRNGKey(3)
    estimated = jax.jit(lambda k, p: run(k, p, "estimate"))(key, PARAMS)
    k_main, k_coef = jax.random.split(key)
    coeffs = cv.estimate_control_variate_coefficients(
        k_coef, _sin, cv.control_delta(_sin), jac.score_function_jacobians, PARAMS,
        jac.diag_normal_log_scale, 20,
    )  # fmt: skip
    by_hand = run(k_main, PARAMS, coeffs)
    for a, b in zip(estimated, by_hand, strict=True):
        assert a.shape == (8, 2)
        assert jnp.allclose(a, b, rtol=1e-5, atol=1e-6)
    per_key = jax.vmap(lambda k: run(k, PARAMS, 0.5))(jax.random.split(key, 3))
    assert per_key[0].shape == (3, 8, 2)
    g = jax.grad(lambda loc: jnp.sum(run(key, (loc, PARAMS[1]), 1.0)[0]))(LOC)
    assert g.shape == (2,) and bool(jnp.all(jnp.isfinite(g)))
    with pytest.raises(ValueError, match="`coefficients`"):
        run(key, PARAMS, "optimal")
