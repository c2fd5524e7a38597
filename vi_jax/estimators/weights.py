"""Diagnostics of importance log-weights: log-mean-exp, normalised weights, ESS, Pareto k-hat.

All functions take log-weights `log_w` of shape `[K, *batch]` (K samples on axis 0, one
set of weights per datum) and work in log space: no weight is ever exponentiated before
the largest one has been subtracted. A log-weight of `-inf` (a zero weight) is valid;
NaN and `+inf` are refused on concrete inputs.

Pareto k-hat follows Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto smoothed importance
sampling", JMLR 25 (2024): the M = ceil(min(0.2 K, 3 sqrt(K))) largest weights are
fitted, as exceedances over the (M+1)-th largest, by a generalized Pareto distribution
with the empirical-Bayes estimator of Zhang & Stephens (2009), and the shape estimate is
shrunk towards 0.5 by the paper's weakly informative prior, (n k + 10 * 0.5) / (n + 10).
k-hat > 0.7 (`PARETO_K_THRESHOLD`) means the importance-sampling estimate is unreliable.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vi_jax._validation import check_not_nan, check_rank_at_least, is_concrete
from vi_jax.types import Array

PARETO_K_THRESHOLD = 0.7
"""k-hat above this means the importance-sampling estimate is unreliable (PSIS paper)."""

# The PSIS paper's constants: the tail must hold at least 5 draws for a GPD fit, the
# weakly informative prior on k is N(0.5, .) with the weight of 10 pseudo-observations,
# and the Zhang-Stephens grid has 30 + floor(sqrt(n)) points with prior scale 3.
_MIN_TAIL = 5
_PRIOR_K_WEIGHT = 10.0
_PRIOR_K_MEAN = 0.5
_ZS_GRID_BASE = 30
_ZS_PRIOR_B = 3.0


# --------------------------------------------------------------------------- helpers


def _check_log_weights(log_w, name: str = "log_w") -> Array:
    """Validates log-weights `[K, *batch]` (K >= 1; -inf allowed, NaN and +inf refused)."""
    check_rank_at_least(log_w, 1, name)
    log_w = jnp.asarray(log_w)
    if not jnp.issubdtype(log_w.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating-point array, got dtype {log_w.dtype}.")
    if log_w.shape[0] < 1:
        raise ValueError(
            f"`{name}` must hold at least one sample on axis 0, got shape {log_w.shape}."
        )
    check_not_nan(log_w, name)
    if is_concrete(log_w) and bool(np.any(np.asarray(log_w) == np.inf)):
        raise ValueError(f"`{name}` has +inf entries (an infinite importance weight).")
    return log_w


def _normalize_axis(axis: int, ndim: int, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise TypeError(f"`{name}` must be an int, got {type(axis).__name__}.")
    if not -ndim <= axis < ndim:
        raise ValueError(f"`{name}`={axis} is out of range for an array of rank {ndim}.")
    return int(axis) % ndim


def _safe_logsumexp(x: Array, axis: int = 0, keepdims: bool = False) -> Array:
    """Logsumexp that gives -inf (not NaN) for all -inf slices, with zero (not NaN) gradient."""
    m = jnp.max(x, axis=axis, keepdims=True)
    # The shift cancels mathematically: no gradient through it (as in jax.nn.logsumexp).
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    s = jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True)
    positive = s > 0
    out = jnp.where(positive, jnp.log(jnp.where(positive, s, 1.0)) + m, -jnp.inf)
    return out if keepdims else jnp.squeeze(out, axis=axis)


def _log_mean_exp(log_w: Array, axis: int = 0) -> Array:
    return _safe_logsumexp(log_w, axis=axis) - math.log(log_w.shape[axis])


def _log_stderr_of_mean(log_w: Array) -> Array:
    """Log of std(w, ddof=1) / sqrt(K) over axis 0, with w = exp(log_w), in log space.

    Computed on w / max(w) in [0, 1] with the two-pass (centred) formula, then shifted
    back by log max(w): accurate even when all weights are nearly equal. K = 1 gives +inf
    (undefined), all zero weights give -inf (a zero standard error), equal weights -inf
    or a value at rounding level.
    """
    k = log_w.shape[0]
    if k == 1:
        return jnp.full(log_w.shape[1:], jnp.inf, log_w.dtype)
    m = jnp.max(log_w, axis=0, keepdims=True)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    u = jnp.exp(log_w - m)
    var = jnp.sum((u - jnp.mean(u, axis=0)) ** 2, axis=0) / (k - 1)
    positive = var > 0
    log_sd = 0.5 * jnp.log(jnp.where(positive, var, 1.0))
    return jnp.where(positive, log_sd + m[0] - 0.5 * math.log(k), -jnp.inf)


def _normalized_weights(log_w: Array) -> Array:
    return jnp.exp(log_w - jax.nn.logsumexp(log_w, axis=0, keepdims=True))


def _effective_sample_size(log_w: Array) -> Array:
    lse1 = _safe_logsumexp(log_w, axis=0)
    lse2 = _safe_logsumexp(2.0 * log_w, axis=0)
    finite = jnp.isfinite(lse1)
    # Where all weights are zero both are -inf: report ESS = exp(-inf) = 0 instead of NaN.
    log_ess = 2.0 * jnp.where(finite, lse1, 0.0) - jnp.where(finite, lse2, 0.0)
    return jnp.exp(jnp.where(finite, log_ess, -jnp.inf))


# Public entry points validate eagerly, then call one compiled kernel per shape rather
# than dispatching each small operation separately (inside a user's jit they inline).
_log_mean_exp_jit = jax.jit(_log_mean_exp)
_normalized_weights_jit = jax.jit(_normalized_weights)
_effective_sample_size_jit = jax.jit(_effective_sample_size)


def _over_batch(fn, log_w: Array) -> Array:
    """Applies `fn: [K] -> []` to the weights of every datum of `[K, *batch]` -> `[*batch]`."""
    k, batch = log_w.shape[0], log_w.shape[1:]
    rows = jnp.moveaxis(log_w, 0, -1).reshape(-1, k)
    return jax.vmap(fn)(rows).reshape(batch)


# --------------------------------------------------------------------------- basic


def log_mean_exp(log_w: Array, axis: int = 0) -> Array:
    """log( mean(exp(log_w)) ) along `axis`, computed in log space.

    This is the K-sample importance-sampling estimate of log p(x) (the IWAE bound) when
    `log_w = log p(x, z_k) - log q(z_k)`: `logsumexp(log_w) - log K`.

    Args:
      log_w: log-weights, e.g. `[K, *batch]`. -inf (zero weights) allowed.
      axis: the sample axis (static int).

    Returns:
      The input's shape without `axis`. A slice of all -inf gives -inf (not NaN), with a
      zero (not NaN) gradient.
    """
    check_rank_at_least(log_w, 1, "log_w")
    axis = _normalize_axis(axis, jnp.ndim(log_w))
    log_w = _check_log_weights(jnp.moveaxis(jnp.asarray(log_w), axis, 0))
    return _log_mean_exp_jit(log_w)


def normalized_weights(log_w: Array) -> Array:
    """Self-normalised weights w_k / sum_j w_j over axis 0.

    Args:
      log_w: log-weights `[K, *batch]`.

    Returns:
      `[K, *batch]`, non-negative, summing to 1 over axis 0. Where all K log-weights of
      a datum are -inf the normalised weights are undefined (0/0) and are NaN.
    """
    return _normalized_weights_jit(_check_log_weights(log_w))


def effective_sample_size(log_w: Array) -> Array:
    """Kish's effective sample size (sum_k w_k)^2 / sum_k w_k^2 over axis 0, in log space.

    Args:
      log_w: log-weights `[K, *batch]`.

    Returns:
      `[*batch]` in [1, K]: K for equal weights, about 1 when one weight dominates.
      A datum whose K weights are all zero (all log-weights -inf) gets ESS = 0 (no
      effective sample), with a zero (not NaN) gradient.
    """
    return _effective_sample_size_jit(_check_log_weights(log_w))


# --------------------------------------------------------------------------- PSIS


def pareto_tail_length(num_samples: int) -> int:
    """M = ceil(min(0.2 K, 3 sqrt(K))): the number of largest weights PSIS fits (r_eff = 1)."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise TypeError(f"`num_samples` must be a Python int, got {type(num_samples).__name__}.")
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
    return int(math.ceil(min(0.2 * num_samples, 3.0 * math.sqrt(num_samples))))


def pareto_k_threshold(num_samples: int) -> float:
    """The PSIS paper's sample-size-aware threshold min(1 - 1/log10(K), 0.7).

    With few samples even k-hat < 0.7 is not enough for a reliable estimate; for
    K >= 2200 this equals `PARETO_K_THRESHOLD` = 0.7.
    """
    pareto_tail_length(num_samples)  # validates
    if num_samples == 1:
        return -math.inf
    return min(1.0 - 1.0 / math.log10(num_samples), PARETO_K_THRESHOLD)


def _gpd_fit(y_asc: Array, n: Array, m_max: int) -> tuple[Array, Array]:
    """Zhang & Stephens (2009) empirical-Bayes GPD fit with the PSIS prior on k.

    Args:
      y_asc: exceedances `[M]` sorted ascending; the last `n` are the positive ones (the
        fitted tail), the others are zero and are excluded from the fit.
      n: number of positive exceedances (>= 5), a traced integer.
      m_max: static size of the grid, 30 + floor(sqrt(M)) >= the grid size for n.

    Returns:
      `(k, sigma)`: k shrunk towards 0.5 (the PSIS prior), sigma from the unshrunk k.
      Here k is the tail index (the negative of Zhang & Stephens's k): k > 0 is a heavy
      tail, k < 0 a bounded one.
    """
    size = y_asc.shape[0]
    dtype = y_asc.dtype
    nf = n.astype(dtype)
    y_max = y_asc[-1]
    # First quartile of the positive tail: the floor(n/4 + 0.5)-th smallest positive value.
    q_pos = (size - n) + jnp.floor(nf / 4.0 + 0.5).astype(n.dtype) - 1
    y_q = y_asc[q_pos]
    # Grid of m = 30 + floor(sqrt(n)) values of b = -k / sigma; grid points past m are
    # duplicates of the last one, masked out of the posterior weights below.
    m = _ZS_GRID_BASE + jnp.floor(jnp.sqrt(nf))
    j = jnp.minimum(jnp.arange(1, m_max + 1, dtype=dtype), m)
    b = 1.0 / y_max + (1.0 - jnp.sqrt(m / (j - 0.5))) / (_ZS_PRIOR_B * y_q)
    # Zero exceedances add log1p(0) = 0, so sums over all M divided by n are tail means.
    k_grid = jnp.sum(jnp.log1p(-b[:, None] * y_asc[None, :]), axis=1) / nf
    mean_y = jnp.sum(y_asc) / nf
    nonzero = k_grid != 0
    # log(-b/k) -> log(1/mean(y)) as b -> 0 (the exponential limit).
    log_ratio = jnp.where(nonzero, jnp.log(-b / jnp.where(nonzero, k_grid, 1.0)), -jnp.log(mean_y))
    profile = nf * (log_ratio - k_grid - 1.0)
    valid = jnp.arange(1, m_max + 1, dtype=dtype) <= m
    profile = jnp.where(valid, profile, -jnp.inf)
    weights = jax.nn.softmax(profile)
    # As the reference implementations do: drop negligible weights, renormalise.
    weights = jnp.where(weights >= 10.0 * jnp.finfo(dtype).eps, weights, 0.0)
    weights = weights / jnp.sum(weights)
    b_post = jnp.sum(weights * b)
    k = jnp.sum(jnp.log1p(-b_post * y_asc)) / nf
    b_nonzero = b_post != 0
    sigma = jnp.where(b_nonzero, -k / jnp.where(b_nonzero, b_post, 1.0), mean_y)
    k = (nf * k + _PRIOR_K_WEIGHT * _PRIOR_K_MEAN) / (nf + _PRIOR_K_WEIGHT)
    return k, sigma


def _gpd_quantile(p: Array, k: Array, sigma: Array) -> Array:
    """Quantile of the GPD(0, sigma, k) at probabilities p in (0, 1)."""
    small = jnp.abs(k) < jnp.finfo(p.dtype).eps
    k_safe = jnp.where(small, 1.0, k)
    return sigma * jnp.where(small, -jnp.log1p(-p), jnp.expm1(-k_safe * jnp.log1p(-p)) / k_safe)


def _psis_1d(log_w: Array, smooth: bool) -> tuple[Array, Array | None]:
    """k-hat (and optionally smoothed log-weights) for one weight vector `[K]`."""
    size = log_w.shape[0]
    tail_len = pareto_tail_length(size)
    if tail_len < _MIN_TAIL or tail_len + 1 > size:
        # Too few draws to fit a tail (K <= 20): unreliable by convention, as in loo/ArviZ.
        return jnp.asarray(jnp.inf, log_w.dtype), (log_w if smooth else None)
    dtype = log_w.dtype
    top, idx = jax.lax.top_k(log_w, tail_len + 1)  # descending
    lmax = top[0]
    any_finite = jnp.isfinite(lmax)
    # Not stop-gradiented: the smoothed weights are shift + (smoothing of the shifted ones).
    shift = jnp.where(any_finite, lmax, 0.0)
    tail = top[:tail_len] - shift  # <= 0
    # Cut-off: the (M+1)-th largest weight, floored at the smallest normal number as in
    # the reference implementations (tail weights below it are then excluded).
    log_cut = jnp.maximum(top[tail_len] - shift, jnp.log(jnp.finfo(dtype).tiny))
    cut = jnp.exp(log_cut)
    y_desc = jnp.maximum(jnp.exp(tail) - cut, 0.0)
    n = jnp.sum(y_desc > 0)
    # Degenerate: the M+1 largest weights are equal up to rounding (e.g. q = posterior,
    # so all weights are equal): bounded weights, nothing to fit.
    degenerate = (tail[0] - (top[tail_len] - shift)) < math.sqrt(jnp.finfo(dtype).eps)
    fit_ok = any_finite & ~degenerate & (n >= _MIN_TAIL)
    # Double-where: feed the fit harmless values where it is not used (no NaN gradients).
    dummy = jnp.arange(1, tail_len + 1, dtype=dtype) / tail_len
    y_asc = jnp.where(fit_ok, y_desc[::-1], dummy)
    n_safe = jnp.where(fit_ok, n, tail_len)
    m_max = _ZS_GRID_BASE + int(math.floor(math.sqrt(tail_len)))
    k, sigma = _gpd_fit(y_asc, n_safe, m_max)
    special = jnp.where(any_finite & degenerate, -jnp.inf, jnp.inf).astype(dtype)
    khat = jnp.where(fit_ok, k, special)
    if not smooth:
        return khat, None
    # Replace the n positive-exceedance weights by the GPD quantiles at (i - 1/2)/n in
    # rank order, truncated at the largest raw weight; the rest stays as it was.
    rank_asc = jnp.arange(tail_len) - (tail_len - n_safe)  # 0..n-1 on the positive tail
    p = (rank_asc.astype(dtype) + 0.5) / n_safe.astype(dtype)
    p = jnp.clip(p, 0.0, 1.0 - jnp.finfo(dtype).eps)
    quant = _gpd_quantile(p, k, sigma)
    smoothed_asc = jnp.log(cut + jnp.maximum(quant, 0.0))
    smoothed_asc = jnp.minimum(smoothed_asc, 0.0) + shift  # truncate at the raw maximum
    replace_asc = fit_ok & (rank_asc >= 0)
    new_tail = jnp.where(replace_asc, smoothed_asc, (tail + shift)[::-1])[::-1]
    out = log_w.at[idx[:tail_len]].set(new_tail)
    return khat, out


@jax.jit
def _pareto_khat(log_w: Array) -> Array:
    return _over_batch(lambda row: _psis_1d(row, smooth=False)[0], log_w)


@jax.jit
def _pareto_smooth(log_w: Array) -> tuple[Array, Array]:
    k, batch = log_w.shape[0], log_w.shape[1:]
    rows = jnp.moveaxis(log_w, 0, -1).reshape(-1, k)
    khat, smoothed = jax.vmap(lambda row: _psis_1d(row, smooth=True))(rows)
    assert smoothed is not None  # smooth=True always returns the smoothed weights
    return jnp.moveaxis(smoothed.reshape(*batch, k), -1, 0), khat.reshape(batch)


def pareto_khat(log_w: Array) -> Array:
    """Pareto k-hat of importance weights (PSIS diagnostic, Vehtari et al., JMLR 2024).

    The M = ceil(min(0.2 K, 3 sqrt(K))) largest weights, as exceedances over the
    (M+1)-th largest, are fitted with a generalized Pareto distribution by the
    Zhang & Stephens (2009) empirical-Bayes estimator; the shape is then shrunk towards
    0.5 with the paper's weakly informative prior, (n k + 10 * 0.5) / (n + 10).
    k-hat estimates the tail index of the weight distribution: the weights have finite
    variance for k < 1/2 and finite mean for k < 1; the paper's rule is that k-hat >
    0.7 (`PARETO_K_THRESHOLD`) makes the importance-sampling estimate unreliable (see
    also `pareto_k_threshold(K)` for small K). Jit-able (K is static) and vmappable.

    Args:
      log_w: log-weights `[K, *batch]`; K is static. -inf (zero weights) allowed.

    Returns:
      `[*batch]` k-hat per datum. Conventions for the cases without a fit:
      `+inf` when K <= 20 (a tail of at least 5 draws is impossible, as in loo/ArviZ),
      when all weights are zero, or when fewer than 5 tail weights exceed the cut-off
      (ties); `-inf` when the M+1 largest weights are all equal up to rounding (e.g. a
      proposal equal to the target: bounded weights, nothing to fit; loo and ArviZ
      return +inf or raise there).
    """
    return _pareto_khat(_check_log_weights(log_w))


def pareto_smooth(log_w: Array) -> tuple[Array, Array]:
    """Pareto-smoothed log-weights (PSIS) and their k-hat.

    The M largest weights (the n <= M strictly exceeding the (M+1)-th largest; n = M
    without ties) are replaced by the quantiles of the fitted generalized Pareto
    distribution at (i - 1/2)/n, i = 1..n, in rank order, truncated at the largest raw
    weight; the others are unchanged. Without a fit (k-hat = +-inf, see `pareto_khat`)
    the weights are returned unchanged.

    Args:
      log_w: log-weights `[K, *batch]`; K is static.

    Returns:
      `(smoothed_log_w, khat)`: `[K, *batch]` on the scale of the input (not normalised:
      `log_mean_exp(smoothed_log_w)` is the PSIS estimate of log p(x) when log_w are
      log p(x, z) - log q(z)), and `[*batch]` k-hat as `pareto_khat` returns it.
    """
    return _pareto_smooth(_check_log_weights(log_w))
