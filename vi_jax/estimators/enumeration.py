"""Exact marginals by enumeration: log p(x) = log sum_z p(x, z) over a finite support.

For discrete latents with few enough configurations, marginalisation is a `logsumexp`
over the support. Binary latents {0,1}^D are enumerated in chunks generated on the fly
from integer indices, with a running logsumexp inside `jax.lax.scan`, so D = 20
(about a million terms) runs in memory proportional to one chunk.

Conventions (docs/CONVENTIONS.md): `log_joint` maps `z [n, *batch, *event]` to
`log p(x, z) [n, *batch]`. The support has no batch axes: each support point is
broadcast over `batch_shape` (a keyword, default `()`) before `log_joint` is called.

Also here: the lecture's joint probability table of eye colour and nationality, and
helpers to marginalise and normalise such tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
from vi_jax.estimators.weights import _safe_logsumexp
from vi_jax.types import Array, LogJoint

# Enumerating {0,1}^D by int32 indices: 2^30 is the largest power of two we index.
_MAX_BINARY_LATENTS = 30
# binary_support materialises [2^D, D]; beyond this use the chunked functions.
_MAX_BINARY_SUPPORT = 20


# ----------------------------------------------------------------- table of the lecture

EYE_COLOURS = ("brown", "blue", "green")
"""Row labels of `EYE_COLOUR_NATIONALITY_TABLE`."""

NATIONALITIES = ("Dutch", "Greek", "Chinese", "Indian", "Italian", "German", "US", "Spanish")
"""Column labels of `EYE_COLOUR_NATIONALITY_TABLE`, in the lecture's order."""


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


EYE_COLOUR_NATIONALITY_TABLE = _read_only(
    np.array(
        [
            # Dutch Greek Chinese Indian Italian German  US  Spanish
            [0.02, 0.03, 0.02, 0.01, 0.07, 0.03, 0.01, 0.00],  # brown: 0.19
            [0.09, 0.01, 0.03, 0.03, 0.08, 0.04, 0.03, 0.06],  # blue:  0.37
            [0.01, 0.01, 0.08, 0.06, 0.07, 0.08, 0.06, 0.06],  # green: 0.43
        ]
    )
)
"""Joint table p(eye colour, nationality), rows `EYE_COLOURS`, columns `NATIONALITIES`.

The lecture's table as printed on its slide (rows brown, blue, green; columns Dutch,
Greek, Chinese, Indian, Italian, German, US, Spanish). Its rows sum to p(brown) = 0.19,
p(blue) = 0.37 and p(green) = 0.43, a total of 0.99, while the slide itself prints
p(green) = 0.44 and a total of 1.00, which its entries do not give; we keep the entries
as printed. One cell (brown, Spanish) is 0.00, so its log is −inf (zero mass). Use
`normalise_table` to make it a distribution, and `log_marginal_table` (on its log) to
marginalise in log space. Numpy float64 array `[3, 8]`, read-only.
"""


def normalise_table(table: Array, *, log: bool = False) -> Array:
    """Rescales a joint table of non-negative masses to sum to 1.

    Args:
      table: `[*table_shape]` non-negative finite masses with a positive total, or, with
        `log=True`, their logarithms (-inf allowed).
      log: whether `table` holds log-masses; the result is then in log space too.

    Returns:
      The table divided by its total (minus its logsumexp with `log=True`), same shape.
    """
    table = jnp.asarray(table)
    if not jnp.issubdtype(table.dtype, jnp.inexact):
        table = table.astype(jnp.zeros(()).dtype)
    if log:
        check_not_nan(table, "table")
        if is_concrete(table):
            arr = np.asarray(table)
            if np.any(arr == np.inf):
                raise ValueError("`table` (log-masses) has +inf entries.")
            if np.all(arr == -np.inf):
                raise ValueError("`table` (log-masses) is all -inf: the total mass is 0.")
        return table - _safe_logsumexp(table.reshape(-1), axis=0)
    check_finite(table, "table")
    if is_concrete(table):
        arr = np.asarray(table)
        if np.any(arr < 0):
            raise ValueError("`table` has negative entries; masses must be >= 0.")
        if not np.sum(arr) > 0:
            raise ValueError("`table` sums to 0; it cannot be normalised.")
    return table / jnp.sum(table)


def log_marginal_table(log_table: Array, axis: int | Sequence[int]) -> Array:
    """Marginalises a joint table in log space: log sum over `axis` of exp(log_table).

    E.g. `log_marginal_table(jnp.log(EYE_COLOUR_NATIONALITY_TABLE), axis=1)` is
    log p(eye colour), the log row sums.

    Args:
      log_table: `[*table_shape]` log-masses; -inf (zero mass) allowed, NaN refused.
      axis: the axis or axes summed out (static).

    Returns:
      `log_table`'s shape without `axis`; a slice of all -inf gives -inf (not NaN).
    """
    log_table = jnp.asarray(log_table)
    check_not_nan(log_table, "log_table")
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    if not axes:
        raise ValueError("`axis` must name at least one axis.")
    norm = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int | np.integer):
            raise TypeError(f"`axis` entries must be ints, got {type(a).__name__}.")
        if not -log_table.ndim <= a < log_table.ndim:
            raise ValueError(
                f"`axis`={a} is out of range for `log_table` of rank {log_table.ndim}."
            )
        norm.append(int(a) % log_table.ndim)
    if len(set(norm)) != len(norm):
        raise ValueError(f"`axis` has repeated entries: {axes}.")
    # Move the summed axes to the front and flatten them into one.
    moved = jnp.moveaxis(log_table, norm, list(range(len(norm))))
    flat = moved.reshape(-1, *moved.shape[len(norm) :])
    return _safe_logsumexp(flat, axis=0)


# ----------------------------------------------------------------- generic enumeration


def _evaluate(log_joint: LogJoint, z: Array, batch_shape: tuple[int, ...]) -> Array:
    """log_joint on support points `[n, *event]` broadcast to `[n, *batch, *event]`."""
    n, event = z.shape[0], z.shape[1:]
    zb = jnp.broadcast_to(z.reshape(n, *(1,) * len(batch_shape), *event), (n, *batch_shape, *event))
    value = log_joint(zb)
    if tuple(jnp.shape(value)) != (n, *batch_shape):
        raise ValueError(
            f"`log_joint` must map z of shape {tuple(zb.shape)} to log p(x, z) of shape "
            f"{(n, *batch_shape)} ([num_support, *batch_shape]), got {jnp.shape(value)}. "
            "Pass `batch_shape` if your data have batch axes."
        )
    return value


def _lse_init(batch_shape: tuple[int, ...], dtype) -> tuple[Array, Array]:
    """Running logsumexp state: (running max, -inf at first; sum of exp(values - max))."""
    return jnp.full(batch_shape, -jnp.inf, dtype), jnp.zeros(batch_shape, dtype)


def _lse_rescale(running_max: Array, values: Array) -> tuple[Array, Array, Array]:
    """Updates the running max with a chunk `[n, *batch]`.

    Returns the new max, the shift to subtract before exponentiating (the max, or 0
    while everything is -inf) and the factor by which to rescale the old sums
    (0 while the old max is -inf: the old sums are 0).
    """
    new_max = jax.lax.stop_gradient(jnp.maximum(running_max, jnp.max(values, axis=0)))
    shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    return new_max, shift, jnp.exp(running_max - shift)


def _lse_finish(running_max: Array, total: Array) -> Array:
    positive = total > 0
    shift = jnp.where(jnp.isfinite(running_max), running_max, 0.0)
    return jnp.where(positive, jnp.log(jnp.where(positive, total, 1.0)) + shift, -jnp.inf)


def _chunked_lse(
    chunk_values: Callable[[Array, int], Array],
    num_items: int,
    chunk_size: int,
    batch_shape: tuple[int, ...],
    dtype,
) -> Array:
    """Logsumexp over `num_items` values produced `chunk_size` at a time.

    `chunk_values(start, size)` returns the log-values of items start..start+size-1,
    shape `[size, *batch]`; full chunks run inside `lax.scan`, a remainder after it.
    """
    num_full, rest = divmod(num_items, chunk_size)

    def update(state, values):
        running_max, total = state
        new_max, shift, factor = _lse_rescale(running_max, values)
        return new_max, total * factor + jnp.sum(jnp.exp(values - shift), axis=0)

    state = _lse_init(batch_shape, dtype)
    if num_full:

        def body(state, i):
            return update(state, chunk_values(i * chunk_size, chunk_size)), None

        state, _ = jax.lax.scan(body, state, jnp.arange(num_full))
    if rest:
        state = update(state, chunk_values(num_full * chunk_size, rest))
    return _lse_finish(*state)


def _check_support(support) -> Array:
    check_rank_at_least(support, 1, "support")
    support = jnp.asarray(support)
    if support.shape[0] < 1:
        raise ValueError(f"`support` must hold at least one point, got shape {support.shape}.")
    check_finite(support, "support")
    return support


def enumerate_log_marginal(
    log_joint: LogJoint,
    support: Array,
    *,
    batch_shape: Sequence[int] = (),
    chunk_size: int | None = None,
) -> Array:
    """Exact log p(x) = logsumexp_z log p(x, z) over a finite support.

    Args:
      log_joint: `z [n, *batch, *event] -> log p(x, z) [n, *batch]`.
      support: all latent values, `[|Z|, *event]` (no batch axes).
      batch_shape: the data's batch shape; each support point is broadcast over it.
      chunk_size: if given, evaluate `log_joint` on `chunk_size` support points at a
        time inside `lax.scan` (bounded memory for a large support), static.

    Returns:
      `[*batch]` log p(x); -inf (not NaN) where every configuration has zero mass.
    """
    check_callable(log_joint, "log_joint")
    support = _check_support(support)
    batch_shape = check_batch_shape(batch_shape)
    if chunk_size is None:
        return _safe_logsumexp(_evaluate(log_joint, support, batch_shape), axis=0)
    chunk_size = min(check_positive_int(chunk_size, "chunk_size"), support.shape[0])

    def chunk_values(start, size):
        z = jax.lax.dynamic_slice_in_dim(support, start, size, axis=0)
        return _evaluate(log_joint, z, batch_shape)

    dtype = jax.eval_shape(lambda: _evaluate(log_joint, support[:1], batch_shape)).dtype
    return _chunked_lse(chunk_values, support.shape[0], chunk_size, batch_shape, dtype)


def enumerate_posterior(
    log_joint: LogJoint, support: Array, *, batch_shape: Sequence[int] = ()
) -> Array:
    """Exact log posterior log p(z | x) = log p(x, z) - log p(x) on every support point.

    Args:
      log_joint: `z [n, *batch, *event] -> log p(x, z) [n, *batch]`.
      support: all latent values, `[|Z|, *event]`.
      batch_shape: the data's batch shape.

    Returns:
      `[|Z|, *batch]` log p(z | x); `exp` of it sums to 1 over axis 0. NaN where every
      configuration has zero mass (the posterior is then undefined).
    """
    check_callable(log_joint, "log_joint")
    support = _check_support(support)
    batch_shape = check_batch_shape(batch_shape)
    values = _evaluate(log_joint, support, batch_shape)
    return values - jax.nn.logsumexp(values, axis=0)


# ----------------------------------------------------------------- binary latents


def _check_num_latents(num_latents: int, limit: int) -> int:
    num_latents = check_positive_int(num_latents, "num_latents")
    if num_latents > limit:
        raise ValueError(
            f"`num_latents`={num_latents} is too large to enumerate here (at most {limit})."
        )
    return num_latents


def _binary_rows(start: Array | int, size: int, num_latents: int, dtype) -> Array:
    """Rows start..start+size-1 of {0,1}^D in binary counting order, `[size, D]`.

    Row i holds the binary digits of i, most significant first (the order of
    `itertools.product([0, 1], repeat=D)`).
    """
    idx = start + jnp.arange(size, dtype=jnp.int32)
    shifts = jnp.arange(num_latents - 1, -1, -1, dtype=jnp.int32)
    return ((idx[:, None] >> shifts[None, :]) & 1).astype(dtype)


def _default_float(dtype):
    return jnp.zeros((), dtype if dtype is not None else None).dtype


def binary_support(num_latents: int, *, dtype=None) -> Array:
    """All 2^D binary configurations, `[2**D, D]`, in binary counting order.

    Row i holds the binary digits of i, most significant first, so row 1 of D = 3 is
    `[0, 0, 1]` (the order of `itertools.product([0, 1], repeat=D)`).

    Args:
      num_latents: D, 1 <= D <= 20 (use `enumerate_binary_log_marginal` beyond).
      dtype: floating dtype of the result (default: JAX's default float).

    Returns:
      `[2**D, D]` array of 0s and 1s.
    """
    num_latents = _check_num_latents(num_latents, _MAX_BINARY_SUPPORT)
    return _binary_rows(0, 2**num_latents, num_latents, _default_float(dtype))


def enumerate_binary_log_marginal(
    log_joint: LogJoint,
    num_latents: int,
    *,
    chunk_size: int = 4096,
    batch_shape: Sequence[int] = (),
    dtype=None,
) -> Array:
    """Exact log p(x) = log sum_{z in {0,1}^D} p(x, z), enumerated in chunks.

    Configurations are generated `chunk_size` at a time from their integer indices
    (bit operations) inside `jax.lax.scan`, with a running (max, sum) logsumexp, so
    memory is O(chunk_size * batch) whatever D: D = 20 is 2^20 terms in 256 chunks.

    Args:
      log_joint: `z [n, *batch, D] -> log p(x, z) [n, *batch]`, z of 0s and 1s.
      num_latents: D, 1 <= D <= 30, static.
      chunk_size: configurations per chunk, static (capped at 2^D).
      batch_shape: the data's batch shape.
      dtype: floating dtype of z (default: JAX's default float).

    Returns:
      `[*batch]` log p(x); -inf where every configuration has zero mass.
    """
    check_callable(log_joint, "log_joint")
    num_latents = _check_num_latents(num_latents, _MAX_BINARY_LATENTS)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    batch_shape = check_batch_shape(batch_shape)
    dtype = _default_float(dtype)
    num_items = 2**num_latents
    chunk_size = min(chunk_size, num_items)

    def chunk_values(start, size):
        return _evaluate(log_joint, _binary_rows(start, size, num_latents, dtype), batch_shape)

    out_dtype = jax.eval_shape(lambda: chunk_values(0, 1)).dtype
    return _chunked_lse(chunk_values, num_items, chunk_size, batch_shape, out_dtype)


def enumerate_binary_posterior_marginals(
    log_joint: LogJoint,
    num_latents: int,
    *,
    chunk_size: int = 4096,
    batch_shape: Sequence[int] = (),
    dtype=None,
) -> Array:
    """Exact posterior marginals p(z_d = 1 | x) for binary latents, enumerated in chunks.

    Accumulates sum_z p(x, z) and sum_z p(x, z) z_d with a running shift (the running
    maximum of log p(x, z)) inside `jax.lax.scan`; memory O(chunk_size * batch * D).

    Args:
      log_joint: `z [n, *batch, D] -> log p(x, z) [n, *batch]`, z of 0s and 1s.
      num_latents: D, 1 <= D <= 30, static.
      chunk_size: configurations per chunk, static.
      batch_shape: the data's batch shape.
      dtype: floating dtype of z (default: JAX's default float).

    Returns:
      `[*batch, D]` probabilities p(z_d = 1 | x); NaN where every configuration has
      zero mass (the posterior is undefined).
    """
    check_callable(log_joint, "log_joint")
    num_latents = _check_num_latents(num_latents, _MAX_BINARY_LATENTS)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    batch_shape = check_batch_shape(batch_shape)
    dtype = _default_float(dtype)
    num_items = 2**num_latents
    chunk_size = min(chunk_size, num_items)
    num_full, rest = divmod(num_items, chunk_size)
    out_dtype = jax.eval_shape(
        lambda: _evaluate(log_joint, _binary_rows(0, 1, num_latents, dtype), batch_shape)
    ).dtype

    def update(state, start, size):
        running_max, total, ones = state
        z = _binary_rows(start, size, num_latents, dtype)
        values = _evaluate(log_joint, z, batch_shape)
        new_max, shift, factor = _lse_rescale(running_max, values)
        u = jnp.exp(values - shift)  # [size, *batch], in [0, 1]
        total = total * factor + jnp.sum(u, axis=0)
        ones = ones * factor[..., None] + jnp.einsum("c...,cd->...d", u, z.astype(u.dtype))
        return new_max, total, ones

    running_max, total = _lse_init(batch_shape, out_dtype)
    state = (running_max, total, jnp.zeros((*batch_shape, num_latents), out_dtype))
    if num_full:

        def body(state, i):
            return update(state, i * chunk_size, chunk_size), None

        state, _ = jax.lax.scan(body, state, jnp.arange(num_full))
    if rest:
        state = update(state, num_full * chunk_size, rest)
    _, total, ones = state
    return ones / total[..., None]
