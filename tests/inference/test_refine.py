"""Tests for semi-amortised refinement on the LinearGaussian model."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import pytest

from vi_jax.estimators import gradients
from vi_jax.inference import ModelView
from vi_jax.inference.refine import refine, refine_view

B, D, N = 16, 2, 5


@pytest.fixture(scope="module")
def problem(fixed_model):
    model = fixed_model
    x, _ = model.sample(jax.random.PRNGKey(1), B)
    # A deliberately bad "encoder": means shrunk to zero-ish and too-wide scales.
    mean, _ = model.posterior_params(x)
    bad = distrax.MultivariateNormalDiag(0.2 * mean + 1.0, jnp.full((B, D), 2.0))
    return model, x, bad


def _exact_elbo(model, x, q):
    return model.elbo(x, q.loc, jax.vmap(jnp.diag)(q.scale_diag))


@pytest.mark.parametrize("optimizer,lr", [("adam", 5e-2), ("sgd", 2e-2)])
def test_refinement_raises_bound_and_shrinks_amortisation_gap(problem, optimizer, lr):
    model, x, bad = problem
    q, trace = jax.jit(
        lambda k: refine(
            k,
            model.log_joint_fn(x),
            bad,
            num_steps=100,
            num_samples=4,
            optimizer=optimizer,
            learning_rate=lr,
        )
    )(jax.random.PRNGKey(2))
    assert trace.shape == (101, B)
    # The exact ELBO (no MC noise) improves for every data point.
    before, after = _exact_elbo(model, x, bad), _exact_elbo(model, x, q)
    assert jnp.all(after > before)
    # Averaged bound trace rises: compare window means (noise is far below the rise).
    assert trace[-10:].mean() > trace[:10].mean() + 1.0
    # The amortisation gap to the best mean-field q shrinks.
    _, cov = model.posterior_params(x)
    p = jnp.linalg.inv(cov)
    best = model.log_marginal(x) - 0.5 * (jnp.sum(jnp.log(jnp.diag(p))) - jnp.linalg.slogdet(p)[1])
    assert jnp.mean(best - after) < 0.2 * jnp.mean(best - before)


def test_refine_view_and_vmap(problem):
    model, x, bad = problem
    view = ModelView(model.log_joint_fn(x), bad, model.log_likelihood_fn(x), model.prior())
    new_view, trace = refine_view(
        jax.random.PRNGKey(3), view, num_steps=5, estimator=gradients.elbo_stl
    )
    assert isinstance(new_view.posterior, distrax.MultivariateNormalDiag)
    assert trace.shape == (6, B)
    traces = jax.vmap(lambda k: refine(k, model.log_joint_fn(x), bad, num_steps=3)[1])(
        jax.random.split(jax.random.PRNGKey(4), 2)
    )
    assert traces.shape == (2, 4, B)
    # gradient does not leak into the encoder's parameters (evaluation-time refinement)
    g = jax.grad(
        lambda s: refine(
            jax.random.PRNGKey(5),
            model.log_joint_fn(x),
            distrax.MultivariateNormalDiag(bad.loc, s),
            num_steps=2,
        )[0].scale_diag.sum()
    )(bad.scale_diag)
    assert jnp.all(g == 0)


def test_refusals(problem):
    model, x, bad = problem
    lj = model.log_joint_fn(x)
    with pytest.raises(ValueError, match="`num_steps`"):
        refine(jax.random.PRNGKey(0), lj, bad, num_steps=0)
    with pytest.raises(ValueError, match="`optimizer`"):
        refine(jax.random.PRNGKey(0), lj, bad, num_steps=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="`learning_rate`"):
        refine(jax.random.PRNGKey(0), lj, bad, num_steps=1, learning_rate=-1.0)
    with pytest.raises(TypeError, match="`q`"):
        refine(jax.random.PRNGKey(0), lj, model.posterior(x), num_steps=1)
