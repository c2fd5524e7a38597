"""Latent-space diagnostics: KL per latent dimension and latent activity (active units)."""

from __future__ import annotations

import distrax
import jax.numpy as jnp

from vi_jax.estimators import kl as _kl
from vi_jax.types import Array


def _diag_gaussian(dist: distrax.Distribution, name: str) -> tuple[Array, Array]:
    if not isinstance(dist, distrax.MultivariateNormalDiag):
        raise TypeError(
            f"`{name}` must be a distrax.MultivariateNormalDiag, got {type(dist).__name__}."
        )
    return dist.loc, jnp.broadcast_to(dist.scale_diag, dist.loc.shape)


def kl_per_dimension(q: distrax.Distribution, prior: distrax.Distribution | None = None) -> Array:
    """Closed-form KL(q_d || p_d) for each latent dimension d of diagonal Gaussians.

    Args:
      q: `MultivariateNormalDiag`, loc/scale `[*batch, latent]`.
      prior: `MultivariateNormalDiag` broadcastable to q (default standard normal).

    Returns:
      `[*batch, latent]`; summing over the last axis gives KL(q || prior).
    """
    mu_q, s_q = _diag_gaussian(q, "q")
    if prior is None:
        mu_p, s_p = jnp.zeros_like(mu_q), jnp.ones_like(s_q)
    else:
        mu_p, s_p = _diag_gaussian(prior, "prior")
        if mu_p.shape[-1] != mu_q.shape[-1]:
            raise ValueError(f"`prior` has latent size {mu_p.shape[-1]}, `q` has {mu_q.shape[-1]}.")
    return _kl.diag_gaussian_kl(mu_q, s_q, mu_p, s_p)


def latent_activity(posterior_means: Array, threshold: float = 0.01) -> tuple[Array, Array]:
    """Active units (Burda et al. 2016) from posterior means over a data set.

    Args:
      posterior_means: E_q[z | x_n], `[N, latent]`, N >= 2.
      threshold: a unit is active when Var_n(E_q[z_u | x_n]) > threshold.

    Returns:
      `(count [], activity [latent])`; jit-able. (For a model behind a `ModelView`,
      `vi_jax.inference.model_active_units` computes the means in chunks and calls the same
      statistic.)
    """
    if jnp.ndim(posterior_means) != 2 or jnp.shape(posterior_means)[0] < 2:
        raise ValueError(
            f"`posterior_means` must have shape [N >= 2, latent], got {jnp.shape(posterior_means)}."
        )
    if not threshold > 0:
        raise ValueError(f"`threshold` must be > 0, got {threshold}.")
    activity = jnp.var(posterior_means, axis=0)
    return jnp.sum(activity > threshold), activity


active_units = latent_activity
"""The old name of `latent_activity` (kept importable)."""
