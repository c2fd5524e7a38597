from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_jax.data import (
    dequantize,
    dynamic_binarize,
    load_mnist,
    mnist,
    static_binarize,
    static_binarized_mnist,
    to_unit_interval,
)

GREY = np.linspace(0.0, 1.0, 41, dtype=np.float32)  # includes exactly 0 and 1


def test_to_unit_interval_values_dtype_and_jit():
    pixels = np.array([[0, 1, 128, 255]], np.uint8)
    x = to_unit_interval(pixels)
    assert x.dtype == jnp.float32 and x.shape == (1, 4)
    np.testing.assert_allclose(x, pixels / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(jax.jit(to_unit_interval)(pixels), x)
    if jax.config.jax_enable_x64:
        assert to_unit_interval(pixels, jnp.float64).dtype == jnp.float64
    with pytest.raises(TypeError, match="`images` must be uint8"):
        to_unit_interval(pixels.astype(np.float32))
    with pytest.raises(TypeError, match="`dtype`"):
        to_unit_interval(pixels, jnp.int32)


def test_dynamic_binarize_is_keyed():
    x = jnp.full((64, 50), 0.5, jnp.float32)
    a = dynamic_binarize(jax.random.key(0), x)
    b = dynamic_binarize(jax.random.key(0), x)
    c = dynamic_binarize(jax.random.key(1), x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == x.dtype and set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_array_equal(jax.jit(dynamic_binarize)(jax.random.key(0), x), a)


def test_dynamic_binarize_mean_matches_grey_levels():
    num_draws = 4000
    keys = jax.random.split(jax.random.key(42), num_draws)
    draws = jax.jit(jax.vmap(dynamic_binarize, in_axes=(0, None)))(keys, jnp.asarray(GREY))
    mean = np.asarray(draws, np.float64).mean(axis=0)
    stderr = np.sqrt(GREY * (1 - GREY) / num_draws)
    assert np.all(np.abs(mean - GREY) <= 4 * stderr + 1e-12)
    assert mean[0] == 0.0 and mean[-1] == 1.0  # p = 0 and p = 1 are exact


def test_dynamic_binarize_vmaps_over_data_and_has_zero_gradient():
    x = jnp.asarray(np.tile(GREY, (3, 1)))
    per_row = jax.vmap(dynamic_binarize, in_axes=(None, 0))(jax.random.key(3), x)
    assert per_row.shape == x.shape
    grad = jax.grad(lambda p: dynamic_binarize(jax.random.key(0), p).sum())(x)
    np.testing.assert_array_equal(grad, 0.0)  # sampling passes no gradient to p


def test_dynamic_binarize_traced_nan_gives_nan():
    x = jnp.asarray([0.0, 0.5, np.nan, 1.0], jnp.float32)
    out = jax.jit(dynamic_binarize)(jax.random.key(0), x)
    assert np.isnan(out[2]) and out[0] == 0.0 and out[3] == 1.0 and out[1] in (0.0, 1.0)


def test_dynamic_binarize_refuses_bad_input():
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="`x01`.*to_unit_interval"):
        dynamic_binarize(key, np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"`x01` must lie in \[0, 1\]"):
        dynamic_binarize(key, np.array([0.5, 1.5], np.float32))
    with pytest.raises(ValueError, match="`x01` has 1 non-finite"):
        dynamic_binarize(key, np.array([0.5, np.nan], np.float32))


def test_static_binarize_is_reproducible_and_unbiased():
    x = np.tile(GREY, (2000, 1))
    a = static_binarize(x, seed=7)
    assert a.dtype == np.uint8 and a.shape == x.shape and set(np.unique(a)) <= {0, 1}
    np.testing.assert_array_equal(a, static_binarize(x, seed=7))
    assert not np.array_equal(a, static_binarize(x, seed=8))
    mean = a.mean(axis=0)
    stderr = np.sqrt(GREY * (1 - GREY) / len(x))
    assert np.all(np.abs(mean - GREY) <= 4 * stderr + 1e-12)
    with pytest.raises(TypeError, match="`seed`"):
        static_binarize(x, seed=-1)


def test_static_binarized_mnist_is_cached_and_reproducible(tiny_mnist):
    tiny_mnist.put_raw()
    train = static_binarized_mnist("train", seed=3, cache_dir=tiny_mnist.root)
    assert train.images.dtype == np.uint8 and train.images.shape == (6, 784)
    assert set(np.unique(train.images)) == {0, 1} and train.labels.dtype == np.int32
    np.testing.assert_array_equal(train.labels, tiny_mnist.arrays["train_labels"])
    path = tiny_mnist.root / "mnist" / "binarized" / "seed3_train.npz"
    assert path.is_file()
    # Served from its own file: works with no MNIST source left at all.
    mnist.mnist_cache_path(tiny_mnist.root).unlink()
    for name in tiny_mnist.files:
        (tiny_mnist.raw / name).unlink()
    again = static_binarized_mnist("train", seed=3, cache_dir=tiny_mnist.root)
    np.testing.assert_array_equal(again.images, train.images)
    # A rebuilt draw is identical; another seed or split gives another draw.
    path.unlink()
    tiny_mnist.put_raw()
    np.testing.assert_array_equal(
        static_binarized_mnist("train", seed=3, cache_dir=tiny_mnist.root).images, train.images
    )
    other = static_binarized_mnist("train", seed=4, cache_dir=tiny_mnist.root)
    assert not np.array_equal(other.images, train.images)
    grey = load_mnist("train", cache_dir=tiny_mnist.root).images
    # Pixels 0 and 255 binarise deterministically.
    assert np.all(train.images[grey == 0] == 0) and np.all(train.images[grey == 255] == 1)


def test_static_binarized_mnist_rebuilds_a_damaged_file(tiny_mnist, caplog):
    tiny_mnist.put_raw()
    first = static_binarized_mnist("test", seed=0, cache_dir=tiny_mnist.root)
    path = tiny_mnist.root / "mnist" / "binarized" / "seed0_test.npz"
    path.write_bytes(b"garbage")
    second = static_binarized_mnist("test", seed=0, cache_dir=tiny_mnist.root)
    np.testing.assert_array_equal(first.images, second.images)
    assert f"corrupt cache file {path}, removed; it will be rebuilt" in caplog.text


def test_dequantize_range_levels_and_keying():
    pixels = np.tile(np.arange(256, dtype=np.uint8), (200, 1))
    x = dequantize(jax.random.key(0), pixels)
    assert x.dtype == jnp.float32 and x.shape == pixels.shape
    assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
    np.testing.assert_array_equal(np.floor(np.asarray(x, np.float64) * 256), pixels)
    noise = np.asarray(x, np.float64) * 256 - pixels
    stderr = np.sqrt(1 / 12 / noise.size)
    assert abs(noise.mean() - 0.5) < 4 * stderr
    np.testing.assert_array_equal(x, jax.jit(dequantize)(jax.random.key(0), pixels))
    assert not np.array_equal(x, dequantize(jax.random.key(1), pixels))
    assert dequantize(jax.random.key(0), pixels[:, :4] // 64, num_levels=4).max() < 1.0
    keys = jax.random.split(jax.random.key(2), 3)
    per_key = jax.vmap(dequantize, in_axes=(0, None))(keys, pixels[:2])
    assert per_key.shape == (3, 2, 256)
    np.testing.assert_array_equal(per_key[1], dequantize(keys[1], pixels[:2]))


def test_dequantize_top_level_stays_below_one():
    # (255 + u) / 256 rounds to 1.0 in float32 for u close to 1; the result must not.
    pixels = np.full((4096, 256), 255, np.uint8)
    x = dequantize(jax.random.key(5), pixels)
    assert float(x.max()) < 1.0


def test_dequantize_refuses_bad_input():
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="`images` must hold integer"):
        dequantize(key, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"`images` must lie in 0\.\.3"):
        dequantize(key, np.array([0, 4], np.uint8), num_levels=4)
    with pytest.raises(ValueError, match="`num_levels`"):
        dequantize(key, np.array([0], np.uint8), num_levels=0)
