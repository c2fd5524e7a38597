from __future__ import annotations

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np
import pytest

from vi_jax import _prng


@pytest.mark.parametrize("shape", [(8,), (7,), (1,), (3, 5, 6), (3, 5, 7), (2, 0)])
def test_words_are_jax_threefry_of_the_pair_counters(shape):
    # The words are JAX's own Threefry-2x32 (as `split` computes it) of one counter per
    # pair of the last axis: two words per hash, bit for bit.
    key = jax.random.key(11)
    *lead, d = shape
    pairs = (*lead, (d + 1) // 2)
    expected = np.asarray(jax.random.key_data(jax.random.split(key, pairs)))
    expected = expected.reshape(*lead, -1)[..., :d]
    got = jax.jit(_prng.uniform_words, static_argnums=1)(key, shape)
    assert got.dtype == jnp.uint32 and got.shape == shape
    np.testing.assert_array_equal(got, expected)
    # Raw uint32 key data reads as the default (threefry) key.
    raw = jax.random.key_data(key)
    np.testing.assert_array_equal(_prng.uniform_words(raw, shape), expected)


def test_hash_matches_jax_on_arbitrary_counters():
    # Both counter words non-zero, as JAX's public threefry_2x32 pairs them.
    rng = np.random.default_rng(0)
    count = jnp.asarray(rng.integers(0, 2**32, 2 * 1000, dtype=np.uint64).astype(np.uint32))
    keypair = tuple(jnp.asarray(rng.integers(0, 2**32, 2, dtype=np.uint64).astype(np.uint32)))
    expected = jex_random.threefry_2x32(keypair, count)
    w1, w2 = _prng.threefry2x32(keypair[0], keypair[1], count[:1000], count[1000:])
    np.testing.assert_array_equal(jnp.concatenate([w1, w2]), expected)


def test_vmap_over_keys_is_per_key():
    keys = jax.random.split(jax.random.key(2), 4)
    batched = jax.vmap(lambda k: _prng.uniform(k, (6, 9)))(keys)
    for i in range(4):
        np.testing.assert_array_equal(batched[i], _prng.uniform(keys[i], (6, 9)))


def test_uniform_moments_and_independence():
    # U[0, 1): mean 1/2, variance 1/12; the two words of one hash, and neighbouring
    # hashes, uncorrelated. Tolerances are 4 standard errors of each statistic.
    draws = _prng.uniform(jax.random.key(5), (2000, 500))
    assert draws.dtype == jnp.float32
    u = np.asarray(draws, np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    n = u.size
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 4 * np.sqrt(1 / 180 / n)  # Var of (U - 1/2)^2 = 1/180
    # Mantissa resolution: every value is a multiple of 2**-23.
    np.testing.assert_array_equal(u * 2**23, np.round(u * 2**23))
    c = u - 0.5
    se = np.sqrt(1 / 144 / (n / 2))  # sd of a product of two independent (U - 1/2)
    assert abs(np.mean(c[:, 0::2] * c[:, 1::2])) < 4 * se  # the two words of one hash
    assert abs(np.mean(c[:, 1:-1:2] * c[:, 2::2])) < 4 * se  # neighbouring hashes
    assert abs(np.mean(c[:-1] * c[1:])) < 4 * np.sqrt(1 / 144 / (n - 500))  # next row
    # Equal-mass bins: a chi-square over 20 bins, far below its 4-sd upper range.
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    chi2 = np.sum((counts - n / 20) ** 2 / (n / 20))
    assert chi2 < 19 + 4 * np.sqrt(2 * 19)


def test_uniform_keys_differ_and_repeat():
    a = _prng.uniform(jax.random.key(0), (64,))
    np.testing.assert_array_equal(a, _prng.uniform(jax.random.key(0), (64,)))
    assert not np.array_equal(a, _prng.uniform(jax.random.key(1), (64,)))
    assert _prng.uniform(jax.random.key(0), ()).shape == ()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize(
    "ours, jax_draw",
    [(_prng.uniform, jax.random.uniform), (_prng.normal, jax.random.normal)],
    ids=["uniform", "normal"],
)
def test_other_dtypes_and_key_kinds_are_jax_draws(ours, jax_draw, dtype):
    key = jax.random.key(4)
    np.testing.assert_array_equal(ours(key, (5, 3), dtype), jax_draw(key, (5, 3), dtype))
    rbg = jax.random.key(4, impl="rbg")
    np.testing.assert_array_equal(ours(rbg, (5, 3)), jax_draw(rbg, (5, 3), jnp.float32))
    if jax.config.jax_enable_x64:
        np.testing.assert_array_equal(
            ours(key, (5, 3), jnp.float64), jax_draw(key, (5, 3), jnp.float64)
        )
    assert ours(key, ()).shape == ()


def test_bernoulli_is_uniform_below_p():
    key = jax.random.key(9)
    p = jnp.linspace(0.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4)
    np.testing.assert_array_equal(_prng.bernoulli(key, p), _prng.uniform(key, (3, 4)) < p)


@pytest.mark.parametrize("shape", [(40, 9), (3, 5, 7), (6,), (1,)])
def test_normal_is_jax_transform_of_flat_threefry_words(shape):
    # sqrt(2) erfinv(u), u from JAX's Threefry-2x32 of one counter per pair of the
    # flattened output, mapped onto (-1, 1) as jax.random.normal maps its own.
    key = jax.random.key(3)
    n = int(np.prod(shape))
    words = np.asarray(jax.random.key_data(jax.random.split(key, (n + 1) // 2)))
    words = words.reshape(-1)[:n].reshape(shape)
    u = (((words >> 9) | np.uint32(0x3F800000)).view(np.float32) - np.float32(1)).astype(np.float32)
    lo = np.nextafter(np.float32(-1), np.float32(0))
    expected = np.sqrt(2.0).astype(np.float32) * jax.scipy.special.erfinv(
        np.maximum(lo, u * (np.float32(1) - lo) + lo)
    )
    got = jax.jit(_prng.normal, static_argnums=1)(key, shape)
    assert got.dtype == jnp.float32 and got.shape == shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_normal_moments_tails_and_independence():
    # N(0, 1): the first four moments, the tail mass beyond 2 and 3 sd, the correlation of
    # the two words of one hash, each within 4 standard errors; all finite (u = -1 is
    # clipped, as in JAX).
    draws = np.asarray(_prng.normal(jax.random.key(8), (2000, 500)), np.float64)
    n = draws.size
    assert np.isfinite(draws).all()
    assert abs(draws.mean()) < 4 * np.sqrt(1 / n)
    assert abs(draws.var() - 1) < 4 * np.sqrt(2 / n)
    assert abs(np.mean(draws**3)) < 4 * np.sqrt(15 / n)
    assert abs(np.mean(draws**4) - 3) < 4 * np.sqrt(96 / n)
    for c, p in ((2.0, 0.0455003), (3.0, 0.0026998)):
        frac = np.mean(np.abs(draws) > c)
        assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert abs(np.mean(draws[:, 0::2] * draws[:, 1::2])) < 4 * np.sqrt(1 / (n / 2))
