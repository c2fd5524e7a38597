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
import numpy as np

from vi_jax._validation import check_callable, check_positive_int, is_concrete
from vi_jax.types import Array


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
      scale: standard deviations `[D]`, > 0 (not log-scales: optax's version took
        log-scales and returned log-scale gradients, which are `scale * grad_scale`;
        `measure_valued_param_jacobians` does that chain rule for any parameterisation).
      num_samples: K >= 1 (static).
      coupling: share randomness between the positive and negative parts.

    Returns:
      `(grad_loc, grad_scale)`, each `[K, D]`: the mean over axis 0 is an unbiased
      estimate of the gradient; the spread gives its variance. Under jit a
      non-positive scale gives NaN.

    Raises:
      ValueError: for a concrete non-positive `scale`.
    """
    check_callable(function, "function")
    num_samples = check_positive_int(num_samples, "num_samples")
    loc, scale = jnp.asarray(loc), jnp.asarray(scale)
    if loc.ndim != 1 or scale.shape != loc.shape:
        raise ValueError(
            f"`loc` and `scale` must both have shape [D], got {loc.shape} and {scale.shape}."
        )
    if is_concrete(scale) and np.any(np.asarray(scale) <= 0):
        raise ValueError(
            f"`scale` must be > 0, got {np.asarray(scale)} (a standard deviation, not a "
            "log-scale: pass jnp.exp(log_scale))."
        )
    # Traced scales cannot be checked: a non-positive one poisons the result with NaN.
    scale = jnp.where(scale > 0, scale, jnp.nan)
    d, dtype = loc.shape[0], loc.dtype
    shape = (num_samples, d)
    # All draws from two calls (each random op is costly to compile): normals for the
    # base samples, the double-sided Maxwell (a 3-d norm and a sign) and, uncoupled, the
    # negative scale part; uniforms for the Rayleigh variables and the coupling.
    k_normal, k_uniform = jax.random.split(key)
    normal = jax.random.normal(k_normal, (5 if coupling else 7,) + shape, dtype)
    uniform = jax.random.uniform(k_uniform, (2,) + shape, dtype)
    base = loc + scale * normal[0]  # the other dimensions ~ q
    base2 = base if coupling else loc + scale * normal[5]
    # Weibull(sqrt 2, 2) = Rayleigh(1): sqrt(-2 log U).
    w_pos = jnp.sqrt(-2.0 * jnp.log1p(-uniform[0]))
    w_neg = w_pos if coupling else jnp.sqrt(-2.0 * jnp.log1p(-uniform[1]))
    # Double-sided Maxwell(0, 1): a random sign times the norm of a 3-d standard normal.
    radius = jnp.sqrt(jnp.sum(normal[1:4] ** 2, axis=0))
    m = jnp.where(normal[4] > 0, radius, -radius)
    # Coupled: m * U is exactly N(0, 1) when m is double-sided Maxwell.
    gauss = m * uniform[1] if coupling else normal[6]

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
