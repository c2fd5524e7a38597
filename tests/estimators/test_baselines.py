"""The MovingAverage baseline: debiasing, the early-decay heuristic, jit / vmap / grad."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vi_jax as vj
from vi_jax.estimators import baselines


def test_debiased_value_is_the_weighted_mean_of_observations():
    obs = jnp.array([6.0, 2.0, 5.0])
    for heuristic in (False, True):
        state = vj.estimators.MovingAverage.init(decay=0.9, early_decay_heuristic=heuristic)
        decays = []
        for o in obs:
            decays.append(float(state.step_decay()))
            state = state.update(o)
        d = np.array(decays)
        # weight of observation i: (1 - d_i) prod_{j > i} d_j
        w = np.array([(1 - d[i]) * np.prod(d[i + 1 :]) for i in range(3)])
        np.testing.assert_allclose(state.value(), w @ np.asarray(obs) / w.sum(), rtol=1e-6)
    assert decays == pytest.approx([0.1, 2 / 11, 0.25])


def test_jit_vmap_grad_and_scan():
    state = vj.estimators.MovingAverage.init((2,), decay=0.5)
    step = jax.jit(lambda s, o: s.update(o))
    new = step(state, jnp.array([1.0, 3.0]))
    np.testing.assert_allclose(new.value(), [1.0, 3.0])
    assert new.decay == 0.5 and int(new.count) == 1
    values = jax.vmap(lambda o: vj.estimators.MovingAverage.init().update(o).value())(
        jnp.arange(3.0)
    )
    np.testing.assert_allclose(values, [0.0, 1.0, 2.0])
    # the baseline carries no gradient (it is held by stop_gradient)
    assert jax.grad(lambda o: vj.estimators.MovingAverage.init().update(o).value())(1.0) == 0.0
    final, _ = jax.lax.scan(lambda s, o: (s.update(o), None), state, jnp.ones((4, 2)))
    np.testing.assert_allclose(final.value(), [1.0, 1.0], rtol=1e-6)


def test_aliases_and_refusals():
    b, state = baselines.moving_average_baseline(vj.estimators.moving_average_init(), 2.0)
    assert float(b) == 2.0 and state.decay == 0.99
    np.testing.assert_allclose(vj.estimators.update_moving_average(1.0, 3.0, 0.5), 2.0)
    with pytest.raises(ValueError, match="`decay`"):
        vj.estimators.MovingAverage.init(decay=1.0)
    with pytest.raises(ValueError, match="`initial_value`"):
        vj.estimators.MovingAverage.init(initial_value=1.0)
    assert (
        float(vj.estimators.MovingAverage.init(initial_value=1.0, zero_debias=False).value()) == 1.0
    )
    bad = dataclasses.replace(vj.estimators.MovingAverage.init(), decay=2.0)
    with pytest.raises(ValueError, match="`decay`"):
        bad.update(1.0)


def test_estimators_accept_the_state_as_baseline():
    state = vj.estimators.MovingAverage.init((2,)).update(jnp.array([-1.0, 2.0]))

    def lj(z):
        return -0.5 * jnp.sum((z - 1.0) ** 2, -1)

    def grads(baseline):
        def surrogate(loc):
            q = vj.estimators.diag_normal_log_scale((loc, jnp.zeros((2, 3))))
            return vj.elbo_score_function(jax.random.key(0), lj, q, 8, baseline=baseline).sum()

        return jax.jit(jax.grad(surrogate))(jnp.zeros((2, 3)))

    np.testing.assert_allclose(grads(state), grads(state.value()), rtol=1e-6)
    assert not np.allclose(grads(state), grads(None))
    scalar = vj.estimators.MovingAverage.init().update(3.0)
    params = (jnp.zeros(3), jnp.zeros(3))
    a = vj.estimators.score_function_jacobians(
        jax.random.key(1), jnp.sum, params, vj.estimators.diag_normal_log_scale, 4, baseline=scalar
    )
    b = vj.estimators.score_function_jacobians(
        jax.random.key(1), jnp.sum, params, vj.estimators.diag_normal_log_scale, 4, baseline=3.0
    )
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
