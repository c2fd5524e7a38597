"""Tests for weight_diagnostics: good q (the posterior) vs bad q."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import pytest

from vi_jax.diagnostics import weight_diagnostics
from vi_jax.estimators.problems import make_linear_gaussian

K = 1000


def test_good_vs_bad_proposal():
    model = make_linear_gaussian(jax.random.PRNGKey(0), data_dim=5, latent_dim=2, noise_scale=0.5)
    x, _ = model.sample(jax.random.PRNGKey(1), 4)
    lj = model.log_joint_fn(x)
    good = jax.jit(weight_diagnostics, static_argnums=(1, 3))(
        jax.random.PRNGKey(2), lj, model.posterior(x), K
    )
    # exact posterior: all weights equal up to float rounding -> ESS = K
    assert jnp.all(good["ess_fraction"] > 0.99)
    # a narrow, shifted proposal: heavy-tailed weights
    mean, _ = model.posterior_params(x)
    bad_q = distrax.MultivariateNormalDiag(mean + 1.0, jnp.full_like(mean, 0.1))
    bad = weight_diagnostics(jax.random.PRNGKey(3), lj, bad_q, K)
    assert bad["ess"].shape == (4,)
    assert jnp.all(bad["ess_fraction"] < 0.05)
    assert jnp.all(bad["pareto_k"] > 0.7)
    # vmap over keys
    ess = jax.vmap(lambda k: weight_diagnostics(k, lj, bad_q, 50)["ess"])(
        jax.random.split(jax.random.PRNGKey(4), 3)
    )
    assert ess.shape == (3, 4)


def test_refusals():
    q = distrax.MultivariateNormalDiag(jnp.zeros((1, 2)), jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="`num_samples`"):
        weight_diagnostics(jax.random.PRNGKey(0), lambda z: z.sum(-1), q, 1)
    with pytest.raises(TypeError, match="`log_joint`"):
        weight_diagnostics(jax.random.PRNGKey(0), None, q, 10)
