"""Uniform and normal draws from a threefry key at half the hashes, without the rolled loop.

`jax.random.uniform` on a threefry key spends one Threefry-2x32 hash per float32 it
returns: its counter-based ("partitionable") scheme hashes one counter per element and
XORs the hash's two output words into one. On a CPU the hash is also lowered as a rolled
`while` loop of five four-round groups. Here each hash gives *two* float32 (its two words,
adjacent along the last axis), and the twenty rounds are written out, so that XLA fuses
them into one elementwise loop. The words are exactly `jax.random.key_data(
jax.random.split(key, (*lead, ceil(D / 2))))`, JAX's own Threefry-2x32 of the row-major
counter (tested bit for bit), so they are as random as JAX's draws; only which words
become which element differs, so the same key does *not* give `jax.random.uniform`'s
values. The counters are laid out like the output (one per pair of the last axis), so a
batch sharded along a leading axis is drawn without communication, as in JAX's scheme.

`python -m benchmarks training_speed` times one epoch's dynamic binarisation alone (468
draws of `[128, 784]`, 2-core CPU): 0.286 s with `jax.random.uniform`, 0.055 s with
`uniform` (benchmarks/README.md, "Issue 19, session 9"). `normal` (`jax.random.normal`'s
`sqrt(2) erfinv(u)`) takes its words in the flattened output's order instead (see
`_flat_words`); `python -m benchmarks evaluation` times it in K = 5000 evaluation against
`jax.random.normal` ("Issue 19, session 10").

Other key implementations (`rbg`, `unsafe_rbg`), dtypes other than float32, and arrays
of 2**32 or more pairs fall back to `jax.random.uniform` (`jax.random.normal`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vi_jax.types import Array

# Threefry-2x32, 20 rounds (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2,
# 3"): the rotation constants of the even and odd groups of four rounds, and the key
# schedule's parity constant.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)
_GROUPS = 5
# float32 in [1, 2) from 23 random mantissa bits, minus 1: JAX's own conversion.
_MANTISSA_SHIFT = np.uint32(32 - 23)
_ONE_BITS = np.uint32(0x3F800000)
_MAX_PAIRS = 2**32
# jax.random.normal's uniform on (-1, 1): lowest level clipped to the float after -1.
_NORMAL_LO = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32)
_SQRT2 = np.float32(np.sqrt(2.0))


def _rotate_left(v: Array, d: int) -> Array:
    return (v << np.uint32(d)) | (v >> np.uint32(32 - d))


def threefry2x32(k1: Array, k2: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
    """The Threefry-2x32 hash of counters `(x1, x2)` under key words `(k1, k2)`, unrolled.

    Args:
      k1: uint32 key word (scalar, or broadcastable against the counters).
      k2: uint32 key word.
      x1: uint32 counters, high words.
      x2: uint32 counters, low words (same shape as `x1`).

    Returns:
      The two uint32 output words, each of the counters' shape.
    """
    schedule = (k1, k2, k1 ^ k2 ^ _PARITY)
    x1 = x1 + schedule[0]
    x2 = x2 + schedule[1]
    for group in range(_GROUPS):
        for r in _ROTATIONS[group % 2]:
            x1 = x1 + x2
            x2 = x1 ^ _rotate_left(x2, r)
        x1 = x1 + schedule[(group + 1) % 3]
        x2 = x2 + schedule[(group + 2) % 3] + np.uint32(group + 1)
    return x1, x2


def _is_threefry(key: Array) -> bool:
    return bool(jax.random.key_impl(key) == "threefry2x32")


def _typed(key: Array) -> Array:
    """A typed key; raw uint32 key data is read with JAX's default implementation."""
    if jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def uniform_words(key: Array, shape: Sequence[int]) -> Array:
    """`uint32 [*shape]` random words, two per Threefry-2x32 hash.

    Element `[..., 2j]` and `[..., 2j + 1]` are the two words of the hash of the
    row-major counter of pair `[..., j]` (high word 0): `key_data(split(key, (*lead, M)))`
    with `M = ceil(D / 2)`, reshaped to `[*lead, 2 M]` and cut to `D`.

    Args:
      key: a threefry PRNG key (typed, or raw uint32 `[2]`).
      shape: `(*lead, D)`, at least one axis, fewer than 2**32 pairs.

    Returns:
      `uint32 [*shape]`.
    """
    *lead, d = shape
    pairs = (*lead, (d + 1) // 2)
    counters = lax.iota(jnp.uint32, math.prod(pairs)).reshape(pairs)
    return _pair_words(key, counters).reshape(*lead, -1)[..., :d]


def _pair_words(key: Array, counters: Array) -> Array:
    # uint32 [*counters.shape, 2]: the two words of the hash of each counter (high word 0).
    data = jax.random.key_data(_typed(key))
    w1, w2 = threefry2x32(data[..., 0], data[..., 1], jnp.zeros_like(counters), counters)
    return jnp.stack([w1, w2], axis=-1)


def uniform(key: Array, shape: Sequence[int] = (), dtype: jnp.dtype = jnp.float32) -> Array:
    """U[0, 1) draws, `shape`, `dtype`: `jax.random.uniform`'s distribution, twice the rate.

    float32 from a threefry key takes the fast path (`uniform_words`: 23 random mantissa
    bits per draw, values `k * 2**-23`, as in JAX); anything else is
    `jax.random.uniform(key, shape, dtype)`.

    Args:
      key: PRNG key.
      shape: output shape (static).
      dtype: floating dtype.

    Returns:
      `[*shape]` array of `dtype` in [0, 1).
    """
    shape = tuple(int(s) for s in shape)
    key = _typed(key)
    pairs = math.prod(shape[:-1]) * ((shape[-1] + 1) // 2) if shape else 1
    if not _fast(key, pairs, dtype):
        return jax.random.uniform(key, shape, dtype)
    return _unit_floats(uniform_words(key, shape or (1,)).reshape(shape))


def _fast(key: Array, pairs: int, dtype: jnp.dtype) -> bool:
    # `pairs`: the number of hashes the caller's layout needs (counters are uint32).
    return jnp.dtype(dtype) == jnp.float32 and _is_threefry(key) and pairs < _MAX_PAIRS


def _unit_floats(words: Array) -> Array:
    # float32 in [1, 2) from the 23 high bits as mantissa, minus 1: JAX's own conversion.
    return lax.bitcast_convert_type((words >> _MANTISSA_SHIFT) | _ONE_BITS, jnp.float32) - 1.0


def _flat_words(key: Array, n: int) -> Array:
    # `normal`'s words: element 2j, 2j + 1 of the flattened output are the words of counter
    # j. Its erf_inv runs on this flat vector, reshaped only at the end: on a CPU, over
    # a short last axis (a latent width of 20) the same arithmetic in the row layout of
    # `uniform_words` ran 5x slower, while for binarisation's [128, 784] the flat layout
    # made `uniform` 7x slower (benchmarks/README.md, "Issue 19, session 10").
    words = _pair_words(key, lax.iota(jnp.uint32, (n + 1) // 2)).reshape(-1)
    return words[:n] if n % 2 else words


def normal(key: Array, shape: Sequence[int] = (), dtype: jnp.dtype = jnp.float32) -> Array:
    """N(0, 1) draws, `shape`, `dtype`: `jax.random.normal`'s transform of `uniform`.

    `sqrt(2) erfinv(u)` with u uniform on (-1, 1) as JAX builds it (the same 2**23
    levels, the lowest clipped to the float after -1). The uniforms come from the same
    hash as `uniform`'s, with the counters over the flattened output: elements `2j` and
    `2j + 1` (row-major) are the words of `key_data(split(key, ceil(N / 2)))[j]`. The
    same distribution as `jax.random.normal`, not the same values for a key. Other dtypes
    and key kinds are `jax.random.normal(key, shape, dtype)`.

    Args:
      key: PRNG key.
      shape: output shape (static).
      dtype: floating dtype.

    Returns:
      `[*shape]` array of `dtype`.
    """
    shape = tuple(int(s) for s in shape)
    key = _typed(key)
    n = math.prod(shape)
    if not _fast(key, (n + 1) // 2, dtype):
        return jax.random.normal(key, shape, dtype)
    u = _unit_floats(_flat_words(key, n))
    u = lax.max(_NORMAL_LO, u * (np.float32(1.0) - _NORMAL_LO) + _NORMAL_LO)
    return (_SQRT2 * lax.erf_inv(u)).reshape(shape)


def bernoulli(key: Array, p: Array) -> Array:
    """`uniform(key, p.shape, p.dtype) < p`: Bernoulli(p) draws as booleans, `p`'s shape.

    Args:
      key: PRNG key.
      p: floating probabilities.

    Returns:
      bool `[*p.shape]` (False where p is NaN: callers that must propagate NaN select it).
    """
    p = jnp.asarray(p)
    return uniform(key, p.shape, p.dtype) < p
