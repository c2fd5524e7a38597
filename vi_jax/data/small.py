"""Small data sets for tests, examples and teaching: no download, seconds to train on.

- `load_digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images; needs the
  optional extra `vi_jax[data]`).
- `synthetic_binary_images`: keyed binary images of horizontal bars, vertical bars and
  crosses — a data set a small VAE learns in seconds, with a known 3-class structure.

Linear-Gaussian data with known parameters: `vi_jax.estimators.make_linear_gaussian(key,
...)` and its `.sample(key, n)` (the model also has the exact log p(x) and posterior).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vi_jax import _validation
from vi_jax.data.mnist import Dataset
from vi_jax.types import Array


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, grey levels scaled from 0..16 to [0, 1].

    Returns:
      `Dataset(images float32 [1797, 64] in [0, 1], labels int32 [1797] in 0..9)`;
      images are row-major 8x8 (`unflatten_images(images, 8, 8)` gives `[1797, 8, 8, 1]`).

    Raises:
      ImportError: scikit-learn is not installed (`pip install 'vi_jax[data]'`).
    """
    try:
        from sklearn import datasets
    except ImportError as err:
        raise ImportError(
            "`load_digits` needs scikit-learn, which ships the 8x8 digits. Install the "
            "optional extra with `pip install 'vi_jax[data]'` (or `pip install scikit-learn`)."
        ) from err
    bunch = datasets.load_digits()
    images = np.asarray(bunch.data, np.float32) / np.float32(16.0)
    return Dataset(images=images, labels=np.asarray(bunch.target, np.int32))


def _as_key(key: Any) -> Array:
    """A PRNG key, or an int seed turned into `jax.random.key(seed)`."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return jax.random.key(int(key))
    return key


def synthetic_binary_images(
    key: Array | int,
    num: int,
    side: int = 8,
    *,
    flip_prob: float = 0.0,
    dtype: Any = jnp.float32,
    return_labels: bool = False,
) -> Array | tuple[Array, Array]:
    """Binary `side x side` images of one bar or a cross, at random positions.

    Each image is, with probability 1/3 each, a horizontal bar on a uniformly chosen
    row (label 0), a vertical bar on a uniformly chosen column (label 1), or both (a
    cross, label 2); then each pixel is flipped with probability `flip_prob`. The data
    have a few discrete factors (kind, row, column), so a VAE with a 2-4 dimensional
    latent space reconstructs them well after a short training.

    Args:
      key: PRNG key, or an int seed (`jax.random.key(seed)`).
      num: number of images N (static).
      side: image side S >= 2 (static).
      flip_prob: pixel noise in [0, 0.5).
      dtype: floating dtype of the images.
      return_labels: also return the kind of each image.

    Returns:
      images `[N, S * S]` of `dtype` in {0, 1} (row-major); with `return_labels`, the
      pair `(images, labels)`, labels `int32 [N]` in {0, 1, 2}. Works under `jax.jit`
      with `num`, `side` static.
    """
    num = _validation.check_positive_int(num, "num")
    side = _validation.check_positive_int(side, "side")
    if side < 2:
        raise ValueError(f"`side` must be >= 2, got {side}.")
    flip_prob = _validation.check_positive_float(flip_prob, "flip_prob", allow_zero=True)
    if flip_prob >= 0.5:
        raise ValueError(f"`flip_prob` must be < 0.5, got {flip_prob}.")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")
    images, labels = _synthetic_images(
        _as_key(key), jnp.asarray(flip_prob), num, side, jnp.dtype(dtype)
    )
    return (images, labels) if return_labels else images


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _synthetic_images(
    key: Array, flip_prob: Array, num: int, side: int, dtype: Any
) -> tuple[Array, Array]:
    # One compiled program: op-by-op dispatch would compile each small op separately.
    k_kind, k_row, k_col, k_flip = jax.random.split(key, 4)
    kind = jax.random.randint(k_kind, (num,), 0, 3)
    row = jax.random.randint(k_row, (num,), 0, side)
    col = jax.random.randint(k_col, (num,), 0, side)
    pos = jnp.arange(side)
    horizontal = (pos[None, :, None] == row[:, None, None]) & (kind != 1)[:, None, None]
    vertical = (pos[None, None, :] == col[:, None, None]) & (kind != 0)[:, None, None]
    images = horizontal | vertical  # [N, S, S]
    images = images ^ jax.random.bernoulli(k_flip, flip_prob, images.shape)  # p = 0: no flip
    return images.reshape(num, side * side).astype(dtype), kind.astype(jnp.int32)
