"""Pixel preprocessing: grey levels in [0, 1], binarisation (dynamic and static), dequantisation.

Which one a model needs depends on its likelihood:

- Bernoulli decoders on *dynamically binarised* data (a fresh draw x ~ Bernoulli(grey)
  every time a batch is used, as in the IWAE paper) — `dynamic_binarize`, called inside
  the compiled training step;
- Bernoulli decoders on a *statically binarised* set (one fixed draw, so that
  log-likelihoods are comparable across runs) — `static_binarize` and
  `static_binarized_mnist`, which caches the draw;
- continuous decoders (Gaussian, logistic) on *dequantised* grey levels — `dequantize`.

Shapes: images are `[N, D]` (or any `[..., D]`; all functions here are elementwise).
"""

from __future__ import annotations

import logging
import numbers
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vi_jax import _prng, _validation
from vi_jax.data import _cache
from vi_jax.data.mnist import SPLITS, Dataset, load_mnist
from vi_jax.types import Array

_log = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_SPLIT_STREAM = {"train": 0, "test": 1}


def _check_uint8(images: Any, name: str) -> None:
    if jnp.result_type(images) != jnp.uint8:
        raise TypeError(
            f"`{name}` must be uint8 pixels (0..255), got dtype {jnp.result_type(images)}."
        )


def _check_unit_interval(x: Any, name: str) -> None:
    """Floating dtype always; for concrete arrays also finite values in [0, 1]."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(
            f"`{name}` must be floating point probabilities in [0, 1], got dtype "
            f"{jnp.result_type(x)} (convert uint8 pixels with `to_unit_interval`)."
        )
    if _validation.is_concrete(x):
        _validation.check_finite(x, name)
        arr = np.asarray(x)
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(
                f"`{name}` must lie in [0, 1], got values in [{arr.min()}, {arr.max()}]."
            )


def _check_float_dtype(dtype: Any) -> None:
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"`seed` must be a non-negative Python int, got {seed!r}.")
    return int(seed)


def to_unit_interval(images: Any, dtype: Any = jnp.float32) -> Array:
    """Grey levels in [0, 1]: uint8 pixels divided by 255.

    Args:
      images: `uint8 [N, D]` pixels in 0..255 (any leading shape works).
      dtype: floating dtype of the result (float32 keeps a device copy of MNIST at
        188 MB).

    Returns:
      `[N, D]` array of `dtype` in [0, 1], on the default device. Works under `jax.jit`.
    """
    _check_uint8(images, "images")
    _check_float_dtype(dtype)
    return jnp.asarray(images, dtype) / jnp.asarray(255, dtype)


def dynamic_binarize(key: Array, x01: Any) -> Array:
    """A fresh binarisation x ~ Bernoulli(x01), drawn on device from `key`.

    The same key gives the same draw; training calls it with a new key per batch, so
    every epoch sees a new binary data set whose expectation is the grey levels. The
    uniforms come from `vi_jax._prng.uniform`: JAX's Threefry-2x32 with both words of
    each hash used and the rounds unrolled, about 5x faster than `jax.random.bernoulli`
    on a CPU (one epoch of `[128, 784]` batches: 0.055 s against 0.286 s,
    benchmarks/README.md, "Issue 19, session 9"), with the same distribution but not
    the same values for a given key.

    Args:
      key: PRNG key.
      x01: `[N, D]` floating grey levels in [0, 1] (from `to_unit_interval`).

    Returns:
      `[N, D]` array of x01's dtype with values in {0, 1}, NaN where a traced x01 is NaN
      (concrete NaNs are refused). Works under `jax.jit` and `jax.vmap` (over keys and
      data).
    """
    _check_unit_interval(x01, "x01")
    x01 = jnp.asarray(x01)
    draw = _prng.bernoulli(key, x01).astype(x01.dtype)
    return jnp.where(jnp.isnan(x01), jnp.asarray(jnp.nan, x01.dtype), draw)


def static_binarize(x01: Any, seed: int = 0) -> np.ndarray:
    """One fixed binarisation x ~ Bernoulli(x01), reproducible from `seed`, on the host.

    The draw uses numpy's PCG64 generator rather than `jax.random`, so it does not
    depend on JAX's version or PRNG settings (which change `jax.random` streams): the
    same seed gives the same data set everywhere. This is *a* statically binarised
    MNIST, not the one of Larochelle & Murray (2011); compare log-likelihoods only
    between runs that use the same draw.

    Args:
      x01: `[N, D]` floating grey levels in [0, 1].
      seed: non-negative int.

    Returns:
      `uint8 [N, D]` numpy array with values in {0, 1}.
    """
    seed = _check_seed(seed)
    _check_unit_interval(x01, "x01")
    x01 = np.asarray(x01)
    draw_dtype = np.float64 if x01.dtype == np.float64 else np.float32
    rng = np.random.Generator(np.random.PCG64(seed))
    return (rng.random(x01.shape, dtype=draw_dtype) < x01).astype(np.uint8)


def static_binarized_mnist(
    split: str = "train",
    seed: int = 0,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
) -> Dataset:
    """MNIST binarised once with `static_binarize`, cached as an `.npz`.

    Each (seed, split) pair is drawn once from pixel/255 with its own stream, the
    train and test draws being independent, and stored in
    `<cache_dir>/mnist/binarized/seed<seed>_<split>.npz`; later calls read that file.

    Args:
      split: `"train"` (60,000) or `"test"` (10,000).
      seed: non-negative int selecting the draw.
      cache_dir: cache root, as in `load_mnist`.
      offline: as in `load_mnist` (only used if MNIST itself is not cached yet).

    Returns:
      `Dataset(images uint8 [N, 784] in {0, 1}, labels int32 [N])`.
    """
    split = _validation.check_choice(split, SPLITS, "split")
    seed = _check_seed(seed)
    root = _cache.resolve_cache_dir(cache_dir)
    path = root / "mnist" / "binarized" / f"seed{seed}_{split}.npz"
    if path.exists():
        try:
            return _read_binarized(path, seed)
        except (OSError, ValueError) as err:  # damaged: rebuild it below
            _log.warning("corrupt cache file %s, removed; it will be rebuilt (%s)", path, err)
            _cache.remove_cache_file(path)
    grey = load_mnist(split, cache_dir=root, offline=offline)
    stream_seed = np.random.SeedSequence([seed, _SPLIT_STREAM[split]]).generate_state(1)[0]
    x01 = grey.images.astype(np.float32) / np.float32(255.0)
    binary = static_binarize(x01, int(stream_seed))
    _cache.save_npz_atomic(
        path,
        {
            "images": binary,
            "labels": grey.labels.astype(np.uint8),
            "seed": np.asarray(seed, np.int64),
            "format_version": np.asarray(_FORMAT_VERSION, np.int32),
        },
    )
    return Dataset(binary, grey.labels)


def _read_binarized(path: Path, seed: int) -> Dataset:
    arrays = _cache.load_npz(path)
    images, labels = arrays.get("images"), arrays.get("labels")
    if (
        int(arrays.get("format_version", -1)) != _FORMAT_VERSION
        or int(arrays.get("seed", -1)) != seed
        or images is None
        or labels is None
        or images.dtype != np.uint8
        or images.ndim != 2
        or labels.shape != images.shape[:1]
        or images.max(initial=0) > 1
    ):
        raise ValueError(f"{path} is not a valid binarised MNIST for seed {seed}.")
    return Dataset(images, labels.astype(np.int32))


def dequantize(
    key: Array, images: Any, *, num_levels: int = 256, dtype: Any = jnp.float32
) -> Array:
    """Uniform dequantisation: (pixel + u) / num_levels with u ~ U[0, 1), for densities.

    A continuous density p on [0, 1]^D fitted to dequantised data bounds the discrete
    likelihood: log P(pixels) >= E_u[log p((pixels + u) / L)] - D log L (Theis et al.,
    2016), so report `-(that) / (D log 2)` as bits per dimension.

    Args:
      key: PRNG key (a fresh one per batch, as for `dynamic_binarize`).
      images: `[N, D]` integer pixels in 0..num_levels-1 (uint8 for MNIST).
      num_levels: number of grey levels L (256 for 8-bit images), static.
      dtype: floating dtype of the result.

    Returns:
      `[N, D]` array of `dtype` in [0, 1). Works under `jax.jit` and `jax.vmap`.
    """
    num_levels = _validation.check_positive_int(num_levels, "num_levels")
    _check_float_dtype(dtype)
    if not jnp.issubdtype(jnp.result_type(images), jnp.integer):
        raise TypeError(f"`images` must hold integer pixels, got dtype {jnp.result_type(images)}.")
    if _validation.is_concrete(images):
        arr = np.asarray(images)
        if arr.size and (arr.min() < 0 or arr.max() >= num_levels):
            raise ValueError(
                f"`images` must lie in 0..{num_levels - 1} (`num_levels` = {num_levels}), "
                f"got values in [{arr.min()}, {arr.max()}]."
            )
    images = jnp.asarray(images)
    noise = jax.random.uniform(key, images.shape, dtype)
    x = (images.astype(dtype) + noise) / jnp.asarray(num_levels, dtype)
    # (L - 1 + u) / L can round up to exactly 1 in float32; keep the interval half-open.
    return jnp.minimum(x, jnp.nextafter(jnp.asarray(1, dtype), jnp.asarray(0, dtype)))
