"""Tests for the approximation/amortisation gap decomposition on a linear-Gaussian VAE."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_jax.estimators import gradients
from vi_jax.inference import ModelView, gaps

N_DATA, D, X = 12, 2, 5


@pytest.fixture(scope="module")
def setup(fixed_model):
    model = fixed_model
    data, _ = model.sample(jax.random.PRNGKey(1), N_DATA)

    def model_fn(params, x):
        # An affine "encoder" deliberately off the optimum: scaled exact mean, wide scale.
        enc_w, enc_scale = params
        mean, _ = model.posterior_params(x)
        q = distrax.MultivariateNormalDiag(mean @ enc_w, jnp.broadcast_to(enc_scale, mean.shape))
        return ModelView(model.log_joint_fn(x), q, model.log_likelihood_fn(x), model.prior())

    params = (0.5 * jnp.eye(D), jnp.full((D,), 1.5))
    return model, data, model_fn, params


def test_gaps_decomposition_and_table(setup):
    model, data, model_fn, params = setup
    per, summary = gaps.inference_gaps(
        jax.random.PRNGKey(2),
        params,
        model_fn,
        data,
        estimator=gradients.elbo_stl,
        family="fullrank",
        num_is_samples=2000,
        svi_steps=300,
        learning_rate=5e-2,
        svi_num_samples=4,
        num_elbo_samples=500,
        chunk_size=500,
        data_chunk=8,
    )
    assert per["log_px"].shape == (N_DATA,)
    # IS matches the exact log p(x) within 4 of its own (delta-method) standard errors
    # plus the O(1/K) downward bias of the log, bounded by a stderr^2 term.
    exact = np.asarray(model.log_marginal(data))
    se = per["log_px_stderr"]
    assert np.all(np.abs(per["log_px"] - exact) < 4 * se + se**2 + 1e-3)
    assert np.all(se < 0.05)
    # Amortisation gap >= 0 up to MC error (4 stderr of the difference).
    err = 4 * np.hypot(per["elbo_opt_stderr"], per["elbo_enc_stderr"])
    assert np.all(per["amortisation_gap"] > -err)
    assert summary["amortisation_gap"] > 10 * summary["amortisation_gap_stderr"]
    # q* is full-rank, so q* ~ p(z|x) and the approximation gap ~ 0 (STL: no MC noise
    # at the optimum; 4 x the mean ELBO stderr covers the remaining estimate error).
    tol = 4 * np.mean(per["elbo_opt_stderr"]) / np.sqrt(N_DATA) + 5e-3
    assert abs(summary["approximation_gap"]) < tol
    table = gaps.gaps_table(summary)
    assert table.count("\n") == 7 and "amortisation gap" in table


def test_refusals(setup):
    _, data, model_fn, params = setup
    with pytest.raises(ValueError, match="`svi_steps`"):
        gaps.inference_gaps(jax.random.PRNGKey(0), params, model_fn, data, svi_steps=0)
    with pytest.raises(ValueError, match="`family`"):
        gaps.inference_gaps(jax.random.PRNGKey(0), params, model_fn, data, family="x")
    with pytest.raises(ValueError, match="`data`"):
        gaps.inference_gaps(jax.random.PRNGKey(0), params, model_fn, data[0])
    with pytest.raises(ValueError, match="`summary`"):
        gaps.gaps_table({"log_px": 1.0})


def test_gaussian_q_star_starts_from_any_encoder_q(setup):
    """A string family on a non-diagonal encoder q starts q* from q's mean and marginal
    scales: with a (diagonal) full-covariance q and no optimisation to speak of, q* = q,
    so the amortisation gap is zero up to the two ELBO estimates' Monte Carlo error."""
    model, data, model_fn, params = setup

    def tri_model_fn(params, x):
        view = model_fn(params, x)
        q = view.posterior
        tri = jax.vmap(jnp.diag)(q.scale_diag)
        return view._replace(posterior=distrax.MultivariateNormalTri(q.loc, tri))

    q_enc = tri_model_fn(params, data).posterior
    # Exact ELBO of q_enc (closed form for the linear-Gaussian model).
    elbo_exact = np.asarray(model.elbo(data, q_enc.loc, q_enc.scale_tri))
    per, _ = gaps.inference_gaps(
        jax.random.PRNGKey(3),
        params,
        tri_model_fn,
        data,
        family="meanfield",
        num_is_samples=10,
        svi_steps=1,
        learning_rate=1e-9,
        num_elbo_samples=2000,
        data_chunk=N_DATA,
    )
    # q* = q_enc: both ELBO estimates agree with q_enc's exact ELBO within 4 stderr.
    for name in ("elbo_opt", "elbo_enc"):
        err = 4 * per[f"{name}_stderr"]
        assert np.all(np.abs(per[name] - elbo_exact) < err), (name, per[name], elbo_exact)
    # and a q* started elsewhere would show: q_enc is far from the exact posterior.
    assert np.all(np.asarray(model.log_marginal(data)) - elbo_exact > 1.0)
