"""Tests for gradient_statistics: closed-form mean and the SF > pathwise variance order."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import pytest

from vi_jax.diagnostics import gradient_statistics
from vi_jax.estimators import gradients
from vi_jax.estimators.problems import make_linear_gaussian

B, D = 2, 2
NUM_KEYS = 2000


@pytest.fixture(scope="module")
def problem():
    model = make_linear_gaussian(jax.random.PRNGKey(0), data_dim=5, latent_dim=D, noise_scale=0.7)
    x, _ = model.sample(jax.random.PRNGKey(1), B)
    params = {"loc": jnp.zeros((B, D)), "log_scale": jnp.full((B, D), -0.5)}
    return model, x, params


def _surrogate(model, x, estimator):
    def fn(key, p):
        q = distrax.MultivariateNormalDiag(p["loc"], jnp.exp(p["log_scale"]))
        return jnp.sum(estimator(key, model.log_joint_fn(x), q, 1))

    return fn


def test_unbiased_mean_and_variance_ordering(problem):
    model, x, params = problem
    stats = {
        name: jax.jit(gradient_statistics, static_argnums=(1, 3))(
            jax.random.PRNGKey(2), _surrogate(model, x, est), params, NUM_KEYS
        )
        for name, est in [
            ("pathwise", gradients.elbo_pathwise),
            ("score", gradients.elbo_score_function),
        ]
    }
    exact = jax.grad(
        lambda p: jnp.sum(model.elbo(x, p["loc"], jax.vmap(jnp.diag)(jnp.exp(p["log_scale"]))))
    )(params)
    for s in stats.values():
        for name in ("loc", "log_scale"):
            err = jnp.abs(s["mean"][name] - exact[name])
            assert jnp.all(err < 4 * s["mean_stderr"][name] + 1e-4)
    assert stats["score"]["trace_variance"] > 5 * stats["pathwise"]["trace_variance"]
    assert jnp.mean(stats["pathwise"]["snr"]["loc"]) > jnp.mean(stats["score"]["snr"]["loc"])
    assert stats["pathwise"]["snr"]["loc"].shape == (B, D)


def test_refusals(problem):
    model, x, params = problem
    with pytest.raises(ValueError, match="`num_keys`"):
        gradient_statistics(jax.random.PRNGKey(0), lambda k, p: 0.0, params, 1)
    with pytest.raises(TypeError, match="`surrogate_fn`"):
        gradient_statistics(jax.random.PRNGKey(0), 3, params, 10)
