"""Measure-valued gradients of Gaussian expectations (Mohamed et al., JMLR 2020).

For q = N(loc, diag(scale^2)) and any f (not necessarily differentiable), the
derivative of the density w.r.t. a parameter is written as c (p+ - p-) with p+, p-
densities; then d/dtheta E_q[f] = c (E_{p+}[f] - E_{p-}[f]). Per dimension d:

  - loc_d:   c = 1 / (scale_d sqrt(2 pi)); p+- put z_d = loc_d +- scale_d w, w ~
    Weibull(sqrt 2, 2) (a Rayleigh variable); other dimensions ~ q.
  - scale_d: c = 1 / scale_d; p+ puts z_d = loc_d + scale_d m with m ~ double-sided
    Maxwell, p- is q itself.

With `coupling=True` (variance reduction) the two sides share randomness: the same w
for both loc terms, and the Gaussian draw for the scale term is m * u, u ~ U(0, 1)
(which is exactly N(0, 1) when m is double-sided Maxwell).

This replaces optax's removed `optax.monte_carlo.measure_valued_jacobians`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from vi_jax._validation import check_callable, check_positive_int
from vi_jax.types import Array


def _sample_ds_maxwell(key: Array, shape: tuple[int, ...], dtype) -> Array:
    """Double-sided Maxwell(0, 1): sign * norm of a 3-d standard normal."""
    k1, k2 = jax.random.split(key)
    radius = jnp.linalg.norm(jax.random.normal(k1, shape + (3,), dtype), axis=-1)
    return jnp.where(jax.random.bernoulli(k2, 0.5, shape), radius, -radius)


def measure_valued_jacobians(
    key: Array,
    function: Callable[[Array], Array],
    loc: Array,
    scale: Array,
    num_samples: int,
    *,
    coupling: bool = True,
) -> tuple[Array, Array]:
    """Per-sample measure-valued estimates of d/d(loc, scale) E_{N(loc, scale^2)}[f(z)].

    Requires nothing of f beyond finite expectations (f need not be differentiable).
    Costs 3 * D evaluations of f per sample.

    Args:
      key: PRNG key.
      function: `f: z [D] -> scalar`.
      loc: mean `[D]`.
      scale: standard deviations `[D]`, > 0.
      num_samples: K >= 1 (static).
      coupling: share randomness between the positive and negative parts.

    Returns:
      `(grad_loc, grad_scale)`, each `[K, D]`: the mean over axis 0 is an unbiased
      estimate of the gradient; the spread gives its variance.
    """
    check_callable(function, "function")
    num_samples = check_positive_int(num_samples, "num_samples")
    loc, scale = jnp.asarray(loc), jnp.asarray(scale)
    if loc.ndim != 1 or scale.shape != loc.shape:
        raise ValueError(
            f"`loc` and `scale` must both have shape [D], got {loc.shape} and {scale.shape}."
        )
    d, dtype = loc.shape[0], loc.dtype
    k_base, k_w, k_w2, k_m, k_u, k_base2 = jax.random.split(key, 6)
    shape = (num_samples, d)
    base = loc + scale * jax.random.normal(k_base, shape, dtype)  # other dims ~ q
    base2 = loc + scale * jax.random.normal(k_base2, shape, dtype) if not coupling else base
    # Weibull(sqrt 2, 2) = Rayleigh(1): sqrt(-2 log U).
    w_pos = jnp.sqrt(-2.0 * jnp.log1p(-jax.random.uniform(k_w, shape, dtype)))
    w_neg = (
        w_pos if coupling else jnp.sqrt(-2.0 * jnp.log1p(-jax.random.uniform(k_w2, shape, dtype)))
    )
    m = _sample_ds_maxwell(k_m, shape, dtype)
    gauss = (
        m * jax.random.uniform(k_u, shape, dtype)
        if coupling
        else jax.random.normal(k_u, shape, dtype)
    )

    def replace(zs: Array, values: Array) -> Array:
        # For each sample k and dimension j: zs[k] with coordinate j set to values[k, j].
        eye = jnp.eye(d, dtype=bool)
        return jnp.where(eye[None], values[:, :, None], zs[:, None, :])  # [K, D(j), D]

    f = jax.vmap(jax.vmap(function))
    loc_pos = f(replace(base, loc + scale * w_pos))
    loc_neg = f(replace(base2, loc - scale * w_neg))
    scale_pos = f(replace(base, loc + scale * m))
    scale_neg = f(replace(base2, loc + scale * gauss))
    grad_loc = (loc_pos - loc_neg) / (scale * math.sqrt(2.0 * math.pi))
    grad_scale = (scale_pos - scale_neg) / scale
    return grad_loc, grad_scale
