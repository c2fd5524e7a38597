"""Log-space kernels shared by the estimator modules (private: no validation here).

One rule holds for every kernel: `-inf` is a zero weight and only that; NaN is never
read as zero mass. A slice of all `-inf` gives `-inf` (log of zero mass) with a zero,
not NaN, gradient; a NaN anywhere in a slice gives NaN for that slice (value and
gradient). `+inf` gives `+inf` (or NaN where the arithmetic is undefined).

The public, validating entry points live in `weights.py`; bounds, importance
sampling, enumeration and the gradient estimators call these kernels directly, so
they are jit/vmap/grad-able and do no host-side checks.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vi_jax.types import Array


def _shift(m: Array) -> Array:
    # The shift cancels mathematically: no gradient through it (as in jax.nn.logsumexp).
    return jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))


def _log_of_sum(s: Array, shift: Array) -> Array:
    """log(s) + shift with s >= 0 or NaN: -inf (zero gradient) where s == 0, NaN kept."""
    zero = s == 0  # False for NaN, so NaN flows into the log and out
    return jnp.where(zero, -jnp.inf, jnp.log(jnp.where(zero, 1.0, s)) + shift)


def logsumexp_nan_aware(x: Array, axis: int = 0, keepdims: bool = False) -> Array:
    """Logsumexp of x over `axis`: -inf for all -inf slices, NaN for slices with a NaN."""
    m = _shift(jnp.max(x, axis=axis, keepdims=True))
    out = _log_of_sum(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True), m)
    return out if keepdims else jnp.squeeze(out, axis=axis)


def log_mean_exp_nan_aware(x: Array, axis: int = 0) -> Array:
    """Log-mean-exp of x over `axis` (the IWAE bound of log-weights), NaN-propagating."""
    return logsumexp_nan_aware(x, axis=axis) - math.log(x.shape[axis])


def normalized_weights(log_w: Array, *, zero_mass: float = math.nan) -> Array:
    """w_k / sum_j w_j over axis 0.

    A datum with a NaN log-weight gets NaN weights. A datum whose weights are all zero
    (all -inf) has undefined normalised weights (0/0): they are `zero_mass`, NaN by
    default; the gradient estimators pass 0.0 so that such a datum contributes nothing
    (and no NaN gradient).
    """
    log_norm = logsumexp_nan_aware(log_w, axis=0, keepdims=True)
    empty = log_norm == -jnp.inf
    w = jnp.exp(log_w - jnp.where(empty, 0.0, log_norm))
    return jnp.where(empty, jnp.asarray(zero_mass, w.dtype), w)


def log_stderr_of_mean(log_w: Array) -> Array:
    """Log of std(w, ddof=1) / sqrt(K) over axis 0, with w = exp(log_w), in log space.

    Computed on w / max(w) in [0, 1] with the two-pass (centred) formula, then shifted
    back by log max(w): accurate even when all weights are nearly equal. K = 1 gives
    +inf (undefined), all zero weights -inf (a zero standard error), equal weights -inf
    or a value at rounding level, a NaN log-weight NaN.
    """
    k = log_w.shape[0]
    if k == 1:
        return jnp.where(jnp.isnan(log_w[0]), jnp.nan, jnp.inf).astype(log_w.dtype)
    m = _shift(jnp.max(log_w, axis=0, keepdims=True))
    u = jnp.exp(log_w - m)
    var = jnp.sum((u - jnp.mean(u, axis=0)) ** 2, axis=0) / (k - 1)
    zero = var == 0
    log_sd = 0.5 * jnp.log(jnp.where(zero, 1.0, var))
    return jnp.where(zero, -jnp.inf, log_sd + m[0] - 0.5 * math.log(k))


def effective_sample_size(log_w: Array) -> Array:
    """Kish's ESS (sum w)^2 / sum w^2 over axis 0: 0 for all-zero weights, NaN for NaN."""
    lse1 = logsumexp_nan_aware(log_w, axis=0)
    lse2 = logsumexp_nan_aware(2.0 * log_w, axis=0)
    empty = lse1 == -jnp.inf
    # Where all weights are zero both are -inf: report ESS = exp(-inf) = 0 instead of NaN.
    log_ess = 2.0 * jnp.where(empty, 0.0, lse1) - jnp.where(empty, 0.0, lse2)
    return jnp.exp(jnp.where(empty, -jnp.inf, log_ess))


def any_nan(x: Array, axis: int = 0) -> Array:
    """Whether a slice holds a NaN (held constant: a mask, not a differentiable value)."""
    return jax.lax.stop_gradient(jnp.any(jnp.isnan(x), axis=axis))


# ------------------------------------------------------------ running logsumexp


def running_lse_init(batch_shape: tuple[int, ...], dtype) -> tuple[Array, Array]:
    """Running logsumexp state: (running max, -inf at first; sum of exp(values - max))."""
    return jnp.full(batch_shape, -jnp.inf, dtype), jnp.zeros(batch_shape, dtype)


def running_lse_rescale(running_max: Array, values: Array) -> tuple[Array, Array, Array]:
    """Updates the running max with a chunk `[n, *batch]`.

    Returns the new max (NaN once a NaN was seen), the shift to subtract before
    exponentiating (the max, or 0 while it is not finite) and the factor by which to
    rescale the old sums (0 while the old max is -inf: the old sums are 0).
    """
    new_max = jax.lax.stop_gradient(jnp.maximum(running_max, jnp.max(values, axis=0)))
    shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    return new_max, shift, jnp.exp(running_max - shift)


def running_lse_finish(running_max: Array, total: Array) -> Array:
    """log(total) + shift; -inf for zero mass, NaN once a NaN was seen."""
    shift = jnp.where(jnp.isfinite(running_max), running_max, 0.0)
    out = _log_of_sum(total, shift)
    return jnp.where(jnp.isnan(running_max), jnp.nan, out)
