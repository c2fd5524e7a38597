"""Importance sampling: estimates of the marginal likelihood p(x) and posterior expectations.

With z_k ~ q and weights w_k = p(x, z_k) / q(z_k), (1/K) sum_k w_k is an unbiased
estimate of p(x); its log, `logsumexp(log_w) - log K`, is a stochastic lower bound on
log p(x) in expectation (Jensen) that tightens as K grows (the IWAE bound). Naive Monte
Carlo is the special case of a uniform q. Self-normalised importance sampling estimates
posterior expectations E_{p(z|x)}[f(z)] without knowing p(x).

Conventions (docs/CONVENTIONS.md): `log_joint` maps `z [K, *batch, *event]` to
`log p(x, z) [K, *batch]`; a proposal `q` is a distrax distribution with batch
`[*batch]` and event `[*event]`; `num_samples` K is a static int >= 1.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Sequence
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vi_jax._validation import (
    check_batch_shape,
    check_callable,
    check_finite,
    check_not_nan,
    check_positive_int,
    check_rank_at_least,
    is_concrete,
)
from vi_jax.estimators._common import evaluate_log_joint
from vi_jax.estimators.weights import (
    _effective_sample_size,
    _log_mean_exp,
    _log_stderr_of_mean,
    _normalized_weights,
)
from vi_jax.types import Array, LogJoint

_DISTRIBUTION_TYPES = typing.get_args(distrax.DistributionLike)


class LogMarginalEstimate(NamedTuple):
    """An importance-sampling estimate of log p(x), all in log space.

    Attributes:
      log_marginal: `[*batch]` log of the estimate (1/K) sum_k w_k of p(x): the
        K-sample bound `logsumexp(log_w) - log K`. -inf when all weights are zero.
      log_stderr: `[*batch]` log of the estimated standard error, std(w, ddof=1)/sqrt(K),
        of the estimate of p(x) *in linear space*. +inf for K = 1 (undefined); -inf
        (or a value at rounding level) when the weights are all equal; -inf when they
        are all zero. The relative standard error is
        `exp(log_stderr - log_marginal)`.
      log_weights: `[K, *batch]` log w_k = log p(x, z_k) - log q(z_k); None when the
        estimate was computed in chunks (`chunk_size`), which never holds all K.
    """

    log_marginal: Array
    log_stderr: Array
    log_weights: Array | None


class SNISEstimate(NamedTuple):
    """A self-normalised importance-sampling estimate and its effective sample size.

    Attributes:
      estimate: `[*batch, *value_shape]` sum_k w~_k f(z_k) with w~ the normalised weights.
      ess: `[*batch]` Kish's effective sample size (sum w)^2 / sum w^2 in [1, K] (0 when
        all weights are zero, and then `estimate` is NaN).
    """

    estimate: Array
    ess: Array


def _check_proposal(q) -> None:
    if not isinstance(q, _DISTRIBUTION_TYPES):
        raise TypeError(
            "`q` (the proposal) must be a distrax distribution (or a TFP distribution), got "
            f"{type(q).__name__}."
        )
    for leaf in jax.tree_util.tree_leaves(q):  # its parameters (concrete ones only)
        if hasattr(leaf, "dtype"):
            check_not_nan(leaf, "q (the proposal; a parameter)")


def _estimate(log_w: Array) -> LogMarginalEstimate:
    return LogMarginalEstimate(_log_mean_exp(log_w, axis=0), _log_stderr_of_mean(log_w), log_w)


# --------------------------------------------------------------------------- streaming


class _Moments(NamedTuple):
    """Running count, mean and sum of squared deviations of w / exp(shift), per datum.

    `shift` is the running maximum log-weight (-inf until a positive weight is seen);
    mean and m2 are relative to it (to 0 while it is -inf, when they are 0 anyway).
    """

    shift: Array
    count: Array
    mean: Array
    m2: Array


def _empty_moments(batch: tuple[int, ...], dtype) -> _Moments:
    zeros = jnp.zeros(batch, dtype)
    return _Moments(jnp.full(batch, -jnp.inf, dtype), jnp.zeros((), dtype), zeros, zeros)


def _chunk_moments(log_w: Array) -> _Moments:
    shift = jax.lax.stop_gradient(jnp.max(log_w, axis=0))
    safe = jnp.where(jnp.isfinite(shift), shift, 0.0)
    u = jnp.exp(log_w - safe)  # in [0, 1]
    mean = jnp.mean(u, axis=0)
    count = jnp.asarray(log_w.shape[0], log_w.dtype)
    return _Moments(shift, count, mean, jnp.sum((u - mean) ** 2, axis=0))


def _merge(a: _Moments, b: _Moments) -> _Moments:
    """Chan et al.'s pairwise merge of (count, mean, m2), after a common rescaling.

    `b` must hold at least one sample; `a` may be empty.
    """
    shift = jnp.maximum(a.shift, b.shift)
    safe = jnp.where(jnp.isfinite(shift), shift, 0.0)
    # exp(-inf - safe) = 0: a side with no positive weight has zero moments anyway.
    fa, fb = jnp.exp(a.shift - safe), jnp.exp(b.shift - safe)
    mean_a, mean_b = a.mean * fa, b.mean * fb
    count = a.count + b.count
    delta = mean_b - mean_a
    mean = mean_a + delta * (b.count / count)
    m2 = a.m2 * fa**2 + b.m2 * fb**2 + delta**2 * (a.count * b.count / count)
    return _Moments(shift, count, mean, m2)


def _finish(state: _Moments, num_samples: int) -> tuple[Array, Array]:
    """(log mean of w, log of std(w, ddof=1) / sqrt(K)) from the running moments."""
    safe = jnp.where(jnp.isfinite(state.shift), state.shift, 0.0)
    positive = state.mean > 0
    log_mean = jnp.where(positive, jnp.log(jnp.where(positive, state.mean, 1.0)) + safe, -jnp.inf)
    if num_samples == 1:
        return log_mean, jnp.full_like(log_mean, jnp.inf)
    var = state.m2 / (num_samples - 1)
    spread = var > 0
    log_sd = 0.5 * jnp.log(jnp.where(spread, var, 1.0))
    log_se = jnp.where(spread, log_sd + safe - 0.5 * math.log(num_samples), -jnp.inf)
    return log_mean, log_se


def _streaming_log_mean(
    chunk_log_w: Callable[[Array, int], Array],
    key: Array,
    num_samples: int,
    chunk_size: int,
    batch: tuple[int, ...],
    dtype,
) -> tuple[Array, Array]:
    """Log mean and log standard error of K weights produced `chunk_size` at a time.

    `chunk_log_w(key, size)` returns `[size, *batch]` log-weights; full chunks run in
    `lax.scan` (memory O(chunk_size * batch)), a remainder chunk after it, each chunk
    with its own key split from `key`.
    """
    num_full, rest = divmod(num_samples, chunk_size)
    keys = jax.random.split(key, num_full + (1 if rest else 0))
    state = _empty_moments(batch, dtype)
    if num_full:

        def body(state, k):
            return _merge(state, _chunk_moments(chunk_log_w(k, chunk_size))), None

        state, _ = jax.lax.scan(body, state, keys[:num_full])
    if rest:
        state = _merge(state, _chunk_moments(chunk_log_w(keys[num_full], rest)))
    return _finish(state, num_samples)


# --------------------------------------------------------------------------- estimators


def importance_log_marginal(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    chunk_size: int | None = None,
) -> LogMarginalEstimate:
    """Importance-sampling estimate of log p(x): log (1/K) sum_k p(x, z_k) / q(z_k).

    z_k ~ q independently. The estimate of p(x) (in linear space) is unbiased when q > 0
    wherever p(x, .) > 0; its log is below log p(x) on average and approaches it as K
    grows. With q the exact posterior every weight equals p(x) (zero variance). For a
    reparameterised q, `jax.grad` w.r.t. q's parameters is the IWAE pathwise gradient.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: the proposal, a distrax distribution, batch `[*batch]`, event `[*event]`.
      num_samples: K >= 1, static.
      chunk_size: if given (static), draw and weigh `chunk_size` samples at a time in
        `lax.scan`, merging running (max, mean, squared deviation) statistics, so that
        memory is O(chunk_size * batch) for any K (e.g. K = 5000 for test
        log-likelihoods). The samples then differ from the unchunked ones (each chunk
        has its own key), and `log_weights` is None.

    Returns:
      `LogMarginalEstimate(log_marginal [*batch], log_stderr [*batch], log_weights
      [K, *batch] or None)`.
    """
    check_callable(log_joint, "log_joint")
    _check_proposal(q)
    num_samples = check_positive_int(num_samples, "num_samples")
    batch = tuple(q.batch_shape)

    def chunk_log_w(k: Array, size: int) -> Array:
        z, log_q = q.sample_and_log_prob(seed=k, sample_shape=(size,))
        return evaluate_log_joint(log_joint, z, (size, *batch)) - log_q

    if chunk_size is None:
        return _estimate(chunk_log_w(key, num_samples))
    chunk_size = min(check_positive_int(chunk_size, "chunk_size"), num_samples)
    dtype = jax.eval_shape(lambda: chunk_log_w(key, 1)).dtype
    log_marginal, log_stderr = _streaming_log_mean(
        chunk_log_w, key, num_samples, chunk_size, batch, dtype
    )
    return LogMarginalEstimate(log_marginal, log_stderr, None)


def uniform_log_marginal(
    key: Array,
    log_joint: LogJoint,
    support_or_box: Array | tuple[Array, Array],
    num_samples: int,
    *,
    batch_shape: Sequence[int] = (),
) -> LogMarginalEstimate:
    """Naive Monte Carlo estimate of log p(x) = `log (|Z| * E_{z ~ U(Z)}[p(x, z)])`.

    z_k is uniform on Z, which is either a finite support (drawn with replacement) or a
    box; `|Z|` is the number of support points or the box's volume. This is importance
    sampling with the uniform proposal `q = 1/|Z|`: unbiased for p(x) in linear space,
    but with a variance that explodes when the posterior occupies a small part of Z.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      support_or_box: an array `[|Z|, *event]` of support points, or a tuple
        `(low, high)` of arrays `[*event]` with high > low (a tuple always means a box).
      num_samples: K >= 1, static.
      batch_shape: the data's batch shape; each datum gets its own samples.

    Returns:
      `LogMarginalEstimate` with `log_weights = log p(x, z_k) + log |Z|`, `[K, *batch]`.
    """
    check_callable(log_joint, "log_joint")
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_shape = check_batch_shape(batch_shape)
    if isinstance(support_or_box, tuple):
        if len(support_or_box) != 2:
            raise ValueError(
                "`support_or_box` as a tuple must be a box `(low, high)`, got a tuple of "
                f"length {len(support_or_box)}."
            )
        low, high = (jnp.asarray(b) for b in support_or_box)
        if low.shape != high.shape:
            raise ValueError(
                f"`support_or_box` box bounds must have the same shape [*event], got low "
                f"{low.shape} and high {high.shape}."
            )
        check_finite(low, "support_or_box[0] (low)")
        check_finite(high, "support_or_box[1] (high)")
        if (
            is_concrete(low)
            and is_concrete(high)
            and not np.all(np.asarray(high) > np.asarray(low))
        ):
            raise ValueError("`support_or_box` box must have high > low in every coordinate.")
        dtype = jnp.result_type(low, high, jnp.zeros(()).dtype)
        low, high = low.astype(dtype), high.astype(dtype)
        u = jax.random.uniform(key, (num_samples, *batch_shape, *low.shape), dtype)
        z = low + (high - low) * u
        log_volume = jnp.sum(jnp.log(high - low))
    else:
        check_rank_at_least(support_or_box, 1, "support_or_box")
        support = jnp.asarray(support_or_box)
        if support.shape[0] < 1:
            raise ValueError("`support_or_box` support must hold at least one point.")
        check_finite(support, "support_or_box")
        idx = jax.random.randint(key, (num_samples, *batch_shape), 0, support.shape[0])
        z = support[idx]
        log_volume = math.log(support.shape[0])
    log_w = evaluate_log_joint(log_joint, z, (num_samples, *batch_shape)) + log_volume
    return _estimate(log_w)


def snis_expectation(
    key: Array,
    f: Callable[[Array], Array],
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
) -> SNISEstimate:
    """Self-normalised importance-sampling estimate of E_{p(z|x)}[f(z)].

    sum_k w~_k f(z_k) with z_k ~ q and w~_k = w_k / sum_j w_j, w_k = p(x, z_k) / q(z_k);
    p(x) is not needed. Consistent as K grows but biased (O(1/K)) for finite K; the
    effective sample size says how many posterior draws the weighted sample is worth.

    Args:
      key: PRNG key.
      f: `z [K, *batch, *event] -> values [K, *batch, *value_shape]`, vectorised.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: the proposal, a distrax distribution, batch `[*batch]`, event `[*event]`.
      num_samples: K >= 1, static.

    Returns:
      `SNISEstimate(estimate [*batch, *value_shape], ess [*batch])`.
    """
    check_callable(f, "f")
    check_callable(log_joint, "log_joint")
    _check_proposal(q)
    num_samples = check_positive_int(num_samples, "num_samples")
    batch = tuple(q.batch_shape)
    z, log_q = q.sample_and_log_prob(seed=key, sample_shape=(num_samples,))
    log_w = evaluate_log_joint(log_joint, z, (num_samples, *batch)) - log_q
    values = jnp.asarray(f(z))
    lead = (num_samples, *batch)
    if tuple(values.shape[: len(lead)]) != lead:
        raise ValueError(
            f"`f` must map z of shape {tuple(z.shape)} to values of shape "
            f"[{', '.join(map(str, lead))}, *value_shape], got {values.shape}."
        )
    if not jnp.issubdtype(values.dtype, jnp.inexact):
        values = values.astype(log_w.dtype)
    w = _normalized_weights(log_w)
    w = w.reshape(w.shape + (1,) * (values.ndim - w.ndim))
    return SNISEstimate(jnp.sum(w * values, axis=0), _effective_sample_size(log_w))
