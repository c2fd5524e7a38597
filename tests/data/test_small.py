from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_jax.data import (
    load_digits,
    synthetic_binary_images,
    unflatten_images,
)


def test_load_digits_shape_range_and_labels():
    digits = load_digits()
    assert digits.images.shape == (1797, 64) and digits.images.dtype == np.float32
    assert digits.images.min() == 0.0 and digits.images.max() == 1.0
    np.testing.assert_array_equal(np.unique(digits.images * 16), np.arange(17))
    assert digits.labels.dtype == np.int32
    np.testing.assert_array_equal(np.unique(digits.labels), np.arange(10))
    assert unflatten_images(digits.images, 8, 8).shape == (1797, 8, 8, 1)


def test_load_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` fail
    with pytest.raises(ImportError, match=r"vi_jax\[data\]"):
        load_digits()


@pytest.mark.parametrize("side", [2, 8])
def test_synthetic_images_follow_their_labels(side):
    images, labels = synthetic_binary_images(jax.random.key(0), 300, side, return_labels=True)
    assert images.shape == (300, side * side) and images.dtype == jnp.float32
    assert labels.dtype == jnp.int32 and set(np.unique(labels)) == {0, 1, 2}
    grid = np.asarray(images).reshape(300, side, side)
    full_rows = (grid == 1).all(axis=2).sum(axis=1)
    full_cols = (grid == 1).all(axis=1).sum(axis=1)
    labels = np.asarray(labels)
    sums = grid.sum(axis=(1, 2))
    np.testing.assert_array_equal(sums[labels == 0], side)
    np.testing.assert_array_equal(sums[labels == 1], side)
    np.testing.assert_array_equal(sums[labels == 2], 2 * side - 1)
    assert np.all(full_rows[labels == 0] == 1) and np.all(full_cols[labels == 1] == 1)
    assert np.all((full_rows[labels == 2] == 1) & (full_cols[labels == 2] == 1))


def test_synthetic_images_are_keyed_jittable_and_noisy():
    key = jax.random.key(1)
    a, la = synthetic_binary_images(key, 500, 8, return_labels=True)
    b, lb = jax.jit(
        functools.partial(synthetic_binary_images, return_labels=True), static_argnums=(1, 2)
    )(key, 500, 8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(synthetic_binary_images(1, 500, 8), a)  # int seed = key(1)
    c = synthetic_binary_images(jax.random.key(2), 500, 8)
    assert not np.array_equal(a, c)
    noisy, ln = synthetic_binary_images(key, 500, 8, flip_prob=0.1, return_labels=True)
    np.testing.assert_array_equal(ln, la)
    flipped = np.asarray(noisy != a, np.float64)
    assert abs(flipped.mean() - 0.1) < 4 * np.sqrt(0.1 * 0.9 / flipped.size)


def test_synthetic_images_refuse_bad_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`side`"):
        synthetic_binary_images(key, 4, 1)
    with pytest.raises(TypeError, match="`num`"):
        synthetic_binary_images(key, 4.0, 8)
    with pytest.raises(ValueError, match="`flip_prob`"):
        synthetic_binary_images(key, 4, 8, flip_prob=0.5)
    with pytest.raises(TypeError, match="`dtype`"):
        synthetic_binary_images(key, 4, 8, dtype=jnp.int32)
