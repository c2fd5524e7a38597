"""Tests for kl_per_dimension and latent_activity (active units)."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import pytest

from vi_jax import diagnostics
from vi_jax.diagnostics import kl_per_dimension, latent_activity


def test_kl_per_dimension_sums_to_distrax_kl():
    key = jax.random.PRNGKey(0)
    loc = jax.random.normal(key, (4, 3))
    scale = jnp.exp(0.3 * jax.random.normal(jax.random.PRNGKey(1), (4, 3)))
    q = distrax.MultivariateNormalDiag(loc, scale)
    prior = distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3))
    per_dim = jax.jit(kl_per_dimension)(q, prior)
    assert per_dim.shape == (4, 3) and jnp.all(per_dim >= 0)
    assert jnp.allclose(per_dim.sum(-1), q.kl_divergence(prior), rtol=1e-5, atol=1e-5)
    assert jnp.allclose(kl_per_dimension(q), per_dim)
    # vmap and grad
    g = jax.grad(lambda m: kl_per_dimension(distrax.MultivariateNormalDiag(m, scale)).sum())(loc)
    assert jnp.allclose(g, loc, atol=1e-5)
    v = jax.vmap(lambda m: kl_per_dimension(distrax.MultivariateNormalDiag(m, scale[0])))(loc)
    assert v.shape == (4, 3)


def test_latent_activity_counts_varying_dims():
    means = jnp.stack(
        [jax.random.normal(jax.random.PRNGKey(0), (100,)), jnp.full((100,), 0.3)], axis=1
    )
    count, activity = jax.jit(latent_activity)(means)
    assert int(count) == 1 and activity.shape == (2,)
    assert diagnostics.active_units is latent_activity  # the old name still imports


def test_refusals():
    with pytest.raises(TypeError, match="`q`"):
        kl_per_dimension(distrax.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="`posterior_means`"):
        latent_activity(jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="`threshold`"):
        latent_activity(jnp.zeros((4, 3)), threshold=0.0)
