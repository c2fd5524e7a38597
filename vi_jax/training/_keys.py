"""PRNG key normalisation shared by the loop and the checkpoints."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def as_typed_key(key: Any, name: str = "key") -> jax.Array:
    """Returns a single typed PRNG key (`jax.random.key`) for `key`.

    Accepts a typed key of shape `[]` or a raw `jax.random.PRNGKey` (uint32 `[2]`); both
    give the same random streams.

    Raises:
      TypeError: if `key` is neither.
    """
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise TypeError(
                f"`{name}` must be a single PRNG key, got a key array of shape {key.shape}."
            )
        return key
    if isinstance(key, jax.Array | np.ndarray) and key.dtype == np.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(jnp.asarray(key))
    raise TypeError(
        f"`{name}` must be a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed), "
        f"got {type(key).__name__}"
        + (f" of dtype {key.dtype} and shape {key.shape}." if hasattr(key, "dtype") else ".")
    )
