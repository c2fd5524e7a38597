"""Per-sample Jacobians: shapes, unbiasedness on a closed form, jit / vmap / grad."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stat_utils import assert_unbiased

import vi_jax as vj

LOC, LOG_SCALE = jnp.array([0.5, -1.0]), jnp.array([-0.2, 0.3])
PARAMS = {"loc": LOC, "log_scale": LOG_SCALE}


def _builder(params):
    return vj.estimators.diag_normal_log_scale((params["loc"], params["log_scale"]))


def _sin(z):
    return jnp.sum(jnp.sin(z))


# E[sum sin z] = sum sin(mu) exp(-s^2 / 2): d/dmu, d/dlog s
SCALE = jnp.exp(LOG_SCALE)
TRUE = {
    "loc": jnp.cos(LOC) * jnp.exp(-(SCALE**2) / 2),
    "log_scale": -(SCALE**2) * jnp.sin(LOC) * jnp.exp(-(SCALE**2) / 2),
}


@pytest.mark.parametrize(
    "estimator",
    [
        vj.estimators.score_function_jacobians,
        vj.estimators.pathwise_jacobians,
        vj.estimators.measure_valued_param_jacobians,
    ],
)
def test_unbiased_under_jit_with_vmap_and_grad(estimator):
    k = 4000
    jac = jax.jit(lambda key, p: estimator(key, _sin, p, _builder, k))(jax.random.key(0), PARAMS)
    for name in PARAMS:
        assert jac[name].shape == (k, 2)
        assert_unbiased(jac[name], TRUE[name], what=f"{estimator.__name__} {name}")
    per_key = jax.vmap(lambda key: estimator(key, _sin, PARAMS, _builder, 3))(
        jax.random.split(jax.random.key(1), 2)
    )
    assert per_key["loc"].shape == (2, 3, 2)
    g = jax.grad(lambda loc: jnp.sum(estimator(jax.random.key(2), _sin, {**PARAMS, "loc": loc},
                                                _builder, 3)["loc"]))(LOC)  # fmt: skip
    assert g.shape == (2,) and bool(jnp.all(jnp.isfinite(g)))


def test_refusals():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`num_samples`"):
        vj.estimators.score_function_jacobians(key, _sin, PARAMS, _builder, 0)
    with pytest.raises(ValueError, match="`function`"):
        vj.estimators.pathwise_jacobians(key, lambda z: z, PARAMS, _builder, 2)
    with pytest.raises(ValueError, match="`scale`"):
        vj.estimators.measure_valued_jacobians(key, _sin, LOC, -SCALE, 2)
    nan = jax.jit(lambda s: vj.estimators.measure_valued_jacobians(key, _sin, LOC, s, 2))(-SCALE)
    assert bool(jnp.all(jnp.isnan(nan[1])))
    np.testing.assert_array_equal(
        vj.estimators.measure_valued_jacobians(key, _sin, LOC, SCALE, 2)[0].shape, (2, 2)
    )
