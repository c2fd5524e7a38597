"""Tests for per-datapoint SVI on the LinearGaussian model (exact answers known)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vi_jax.estimators import gradients
from vi_jax.inference import svi

B, D, N = 3, 2, 5


@pytest.fixture(scope="module")
def problem(fixed_model):
    model = fixed_model
    x, _ = model.sample(jax.random.PRNGKey(1), B)
    return model, x


def test_fullrank_converges_to_exact_posterior(problem):
    # STL has zero gradient variance at q = posterior, so the only residual error is
    # optimisation error: tolerances are those of a converged deterministic optimiser.
    model, x = problem
    params, q, trace = jax.jit(
        functools.partial(
            svi.fit_local,
            family="fullrank",
            optimizer=optax.adam(2e-2),
            estimator=gradients.elbo_stl,
            num_samples=4,
            num_steps=1500,
        ),
        static_argnums=1,
    )(jax.random.PRNGKey(2), model.log_joint_fn(x), jnp.zeros((B, D)))
    mean, cov = model.posterior_params(x)
    tri = svi.scale_tri(params, "fullrank")
    q_cov = tri @ jnp.swapaxes(tri, -1, -2)
    assert trace.shape == (1500, B)
    assert jnp.max(jnp.abs(q.mean() - mean)) < 2e-2
    assert jnp.max(jnp.abs(q_cov - cov)) < 2e-2
    gap = model.log_marginal(x) - model.elbo(x, params["loc"], tri)
    assert jnp.all(gap >= -1e-4) and jnp.all(gap < 2e-3)
    # the bound trace rises: late mean well above the first step
    assert jnp.all(trace[-100:].mean(0) > trace[0])


def test_meanfield_gap_equals_closed_form(problem):
    # Optimal mean-field q for a Gaussian posterior with precision P has the exact mean
    # and variances 1/P_ii; its gap is KL = 0.5 (sum log P_ii - log det P).
    model, x = problem
    params, _, _ = svi.fit_local(
        jax.random.PRNGKey(3),
        model.log_joint_fn(x),
        jnp.zeros((B, D)),
        family="meanfield",
        optimizer=optax.adam(2e-2),
        estimator=gradients.elbo_stl,
        num_samples=8,
        num_steps=1500,
    )
    _, cov = model.posterior_params(x)
    precision = jnp.linalg.inv(cov)
    kl_gap = 0.5 * (jnp.sum(jnp.log(jnp.diag(precision))) - jnp.linalg.slogdet(precision)[1])
    elbo = model.elbo(x, params["loc"], svi.scale_tri(params, "meanfield"))
    gap = model.log_marginal(x) - elbo
    assert kl_gap > 1e-3  # the test is not vacuous: the posterior is correlated
    assert jnp.all(gap >= kl_gap - 1e-3)  # cannot beat the optimum
    assert jnp.max(jnp.abs(gap - kl_gap)) < 5e-3 + 0.05 * kl_gap


@pytest.mark.parametrize(
    "estimator", [gradients.elbo_pathwise, gradients.elbo_score_function, gradients.iwae_dreg]
)
def test_any_estimator_plugs_in_and_improves(problem, estimator):
    model, x = problem
    _, _, trace = svi.fit_local(
        jax.random.PRNGKey(4),
        model.log_joint_fn(x),
        jnp.full((B, D), 2.0),
        family="meanfield",
        optimizer=optax.adam(5e-2),
        estimator=estimator,
        num_samples=4,
        num_steps=200,
    )
    assert jnp.all(jnp.isfinite(trace))
    assert jnp.all(trace[-20:].mean(0) > trace[:20].mean(0))


def test_step_init_sample_vmap_and_grad(problem):
    model, x = problem
    opt = optax.sgd(1e-2)
    state = svi.init(jnp.zeros((B, D)), "fullrank", opt)
    assert state.params["raw_tri"].shape == (B, D, D)
    new, bound = jax.jit(
        lambda k, s: svi.step(k, s, model.log_joint_fn(x), "fullrank", opt, num_samples=2)
    )(jax.random.PRNGKey(5), state)
    assert bound.shape == (B,) and int(new.step) == 1
    z = svi.sample(jax.random.PRNGKey(6), new, "fullrank", 7)
    assert z.shape == (7, B, D)
    # vmap over keys of a step
    _, bounds = jax.vmap(
        lambda k: svi.step(k, state, model.log_joint_fn(x), "fullrank", opt, num_samples=2)
    )(jax.random.split(jax.random.PRNGKey(7), 3))
    assert bounds.shape == (3, B)
    # grad through make_q (the exact ELBO w.r.t. the free params is finite)
    g = jax.grad(lambda p: jnp.sum(model.elbo(x, p["loc"], svi.scale_tri(p, "fullrank"))))(
        state.params
    )
    assert jnp.all(jnp.isfinite(g["raw_tri"]))


def test_svi_theta_step_improves_bound(problem):
    model, x = problem

    def log_joint_of(theta):
        return model._replace(bias=theta).log_joint_fn(x)

    theta = jnp.zeros(N)
    topt = optax.adam(5e-2)
    tstate = topt.init(theta)
    local = svi.init_params(jnp.zeros((B, D)), "fullrank")
    run = jax.jit(
        lambda k, th, ts, lp: svi.svi_theta_step(
            k,
            th,
            ts,
            lp,
            log_joint_of,
            family="fullrank",
            theta_optimizer=topt,
            num_samples=4,
            num_local_steps=20,
        )
    )
    first = None
    for i in range(40):
        theta, tstate, local, bound = run(jax.random.PRNGKey(10 + i), theta, tstate, local)
        first = bound.mean() if first is None else first
    assert bound.mean() > first


def test_tol_stops_early_and_converges(problem):
    model, x = problem
    fit = jax.jit(
        lambda k: svi.fit_local(
            k,
            model.log_joint_fn(x),
            jnp.zeros((B, D)),
            family="fullrank",
            optimizer=optax.adam(5e-2),
            estimator=gradients.elbo_stl,
            num_samples=4,
            num_steps=3000,
            tol=1e-4,
            window=50,
        )
    )
    params, _, trace = fit(jax.random.PRNGKey(8))
    taken = int(jnp.sum(jnp.isfinite(trace[:, 0])))
    assert 100 <= taken < 3000  # stopped early
    gap = model.log_marginal(x) - model.elbo(x, params["loc"], svi.scale_tri(params, "fullrank"))
    assert jnp.all(gap < 0.05)


def test_refusals(problem):
    model, x = problem
    lj = model.log_joint_fn(x)
    with pytest.raises(ValueError, match="`family`"):
        svi.fit_local(jax.random.PRNGKey(0), lj, jnp.zeros((B, D)), family="diag", num_steps=1)
    with pytest.raises(ValueError, match="`num_steps`"):
        svi.fit_local(jax.random.PRNGKey(0), lj, jnp.zeros((B, D)), family="meanfield", num_steps=0)
    with pytest.raises(ValueError, match="`tol`"):
        svi.fit_local(
            jax.random.PRNGKey(0), lj, jnp.zeros((B, D)), family="meanfield", num_steps=9, tol=0.0
        )
    with pytest.raises(ValueError, match="`window`"):
        svi.fit_local(
            jax.random.PRNGKey(0), lj, jnp.zeros((B, D)), family="meanfield", num_steps=9, tol=0.1
        )
    with pytest.raises(ValueError, match="`loc`"):
        svi.init(jnp.zeros((B, D, 1)), "meanfield")
    with pytest.raises(ValueError, match="`scale`"):
        svi.init(jnp.zeros((B, D)), "meanfield", scale=jnp.ones((B,)))
    with pytest.raises(ValueError, match="`params_or_loc`"):
        svi.init({"loc": jnp.zeros((B, D))}, "fullrank")
    with pytest.raises(TypeError, match="`num_samples`"):
        svi.fit_local(
            jax.random.PRNGKey(0),
            lj,
            jnp.zeros((B, D)),
            family="meanfield",
            num_samples=1.5,
            num_steps=1,
        )


def test_family_objects_fit_per_datapoint(fixed_model):
    """A `vi_jax.families` object as the family: full covariance reaches the exact
    posterior (STL, zero variance at the optimum); a flow gets per-datum weights."""
    from vi_jax.estimators.gradients import elbo_stl
    from vi_jax.families import FullCovarianceGaussian, RealNVP

    x = jnp.array([[0.5, -1.0, 0.3, 0.2, 1.0], [1.0, 0.4, -0.2, 0.8, 0.1]])
    mean, cov = fixed_model.posterior_params(x)
    fam = FullCovarianceGaussian(2)
    params, q, trace = svi.fit_local(
        jax.random.key(0),
        fixed_model.log_joint_fn(x),
        jnp.zeros((2, 2)),
        family=fam,
        estimator=elbo_stl,
        num_samples=4,
        num_steps=1500,
        optimizer=optax.adam(2e-2),
    )
    assert trace.shape == (1500, 2)
    np.testing.assert_allclose(q.mean(), mean, atol=0.02)
    np.testing.assert_allclose(q.covariance(), jnp.broadcast_to(cov, (2, 2, 2)), atol=0.02)
    flow = RealNVP(2, num_steps=2, hidden=8)
    params, q, trace = svi.fit_local(
        jax.random.key(1),
        fixed_model.log_joint_fn(x),
        jnp.zeros((2, 2)),
        family=flow,
        num_steps=200,
        num_samples=4,
    )
    leaves = jax.tree.leaves(params["net"])
    assert all(leaf.shape[0] == 2 for leaf in leaves)
    # the two data points' weights moved apart: each has its own flow
    assert max(float(jnp.max(jnp.abs(leaf[0] - leaf[1]))) for leaf in leaves) > 1e-3
    assert float(trace[-20:].mean()) > float(trace[:20].mean())
    with pytest.raises(ValueError, match="`family`"):
        svi.fit_local(
            jax.random.key(1),
            fixed_model.log_joint_fn(x),
            jnp.zeros((2, 2)),
            family="maf",
            num_steps=2,
        )
