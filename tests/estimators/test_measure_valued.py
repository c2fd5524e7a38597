"""Unbiasedness of measure-valued gradients against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from vi_jax.estimators.measure_valued import measure_valued_jacobians

K = 20000
LOC = jnp.array([0.5, -1.0, 0.2])
SCALE = jnp.array([0.8, 1.3, 0.5])


def _sin(z):
    return jnp.sum(jnp.sin(z))


def _square(z):
    return jnp.sum(z**2)


# d/dloc and d/dscale of E[sum sin z] = sum sin(mu) exp(-s^2/2), of E[sum z^2] = sum mu^2+s^2
CASES = [
    (
        _sin,
        jnp.cos(LOC) * jnp.exp(-(SCALE**2) / 2),
        -SCALE * jnp.sin(LOC) * jnp.exp(-(SCALE**2) / 2),
    ),
    (_square, 2 * LOC, 2 * SCALE),
]


@pytest.mark.parametrize("coupling", [True, False])
@pytest.mark.parametrize("fn,true_loc,true_scale", CASES)
def test_unbiased(fn, true_loc, true_scale, coupling):
    g_loc, g_scale = jax.jit(
        measure_valued_jacobians, static_argnums=(1, 4), static_argnames="coupling"
    )(jax.random.PRNGKey(0), fn, LOC, SCALE, K, coupling=coupling)
    assert g_loc.shape == (K, 3) and g_scale.shape == (K, 3)
    for g, truth in ((g_loc, true_loc), (g_scale, true_scale)):
        stderr = g.std(0) / jnp.sqrt(K)
        assert jnp.all(jnp.abs(g.mean(0) - truth) < 4 * stderr + 1e-5)


def test_coupling_reduces_variance_and_vmap():
    g_c = measure_valued_jacobians(jax.random.PRNGKey(1), _sin, LOC, SCALE, 5000, coupling=True)
    g_u = measure_valued_jacobians(jax.random.PRNGKey(1), _sin, LOC, SCALE, 5000, coupling=False)
    assert jnp.sum(g_c[0].var(0)) < jnp.sum(g_u[0].var(0))
    out = jax.vmap(lambda k: measure_valued_jacobians(k, _sin, LOC, SCALE, 4)[0])(
        jax.random.split(jax.random.PRNGKey(2), 3)
    )
    assert out.shape == (3, 4, 3)
    # grad through the estimator w.r.t. loc is defined (f's path) and finite
    g = jax.grad(
        lambda m: measure_valued_jacobians(jax.random.PRNGKey(3), _sin, m, SCALE, 4)[0].sum()
    )(LOC)
    assert jnp.all(jnp.isfinite(g))


def test_refusals():
    with pytest.raises(ValueError, match="`num_samples`"):
        measure_valued_jacobians(jax.random.PRNGKey(0), _sin, LOC, SCALE, 0)
    with pytest.raises(ValueError, match="`loc`"):
        measure_valued_jacobians(jax.random.PRNGKey(0), _sin, LOC[None], SCALE, 2)
    with pytest.raises(TypeError, match="`function`"):
        measure_valued_jacobians(jax.random.PRNGKey(0), None, LOC, SCALE, 2)
