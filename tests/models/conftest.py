"""Shared fixtures for the models tests: synthetic binary data and a key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def make_binary_patterns(num=256, side=8, num_prototypes=4, flip=0.05, seed=0):
    """`num` noisy copies of a few random side x side binary prototypes, flat, float32."""
    rng = np.random.default_rng(seed)
    protos = rng.random((num_prototypes, side * side)) < 0.5
    labels = rng.integers(num_prototypes, size=num)
    flips = rng.random((num, side * side)) < flip
    return jnp.asarray(np.logical_xor(protos[labels], flips), dtype=jnp.float32)


@pytest.fixture(scope="session")
def binary_patterns():
    return make_binary_patterns()


@pytest.fixture
def key():
    return jax.random.key(0)
