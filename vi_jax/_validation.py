"""Checks for public boundaries: each raises a clear error that names the argument.

These run at trace time on static information (Python ints, shapes, dtypes) and, for
concrete arrays only, on values. Inside `jax.jit` an argument is a tracer and its
values cannot be inspected, so value checks silently pass there; the trainer checks
losses for finiteness on the host instead.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np


def check_positive_int(value: Any, name: str) -> int:
    """Returns `value` as an int, or raises if it is not a Python/NumPy integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be a Python int (a static sample or step count), got "
            f"{type(value).__name__}: {value!r}."
        )
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")
    return int(value)


def check_positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Returns `value` as a float, or raises if it is not a finite number > 0 (>= 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}.")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {bound}, got {value}.")
    return value


def check_finite_float(value: Any, name: str) -> float:
    """Returns `value` as a float, or raises if it is not a finite Python/NumPy real."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(float(value))
    ):
        raise ValueError(f"`{name}` must be a finite Python float, got {value!r}.")
    return float(value)


def is_concrete(x: Any) -> bool:
    """True when `x` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_finite(x: Any, name: str) -> None:
    """Raises ValueError if a concrete array has NaN or infinite entries.

    Tracers pass unchecked: their values are unknown at trace time.
    """
    if x is None or not is_concrete(x):
        return
    arr = np.asarray(x)
    if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"`{name}` has {bad} non-finite entries (NaN or inf).")


def check_not_nan(x: Any, name: str) -> None:
    """Raises ValueError if a concrete array has NaN entries (-inf is a valid log-weight)."""
    if x is None or not is_concrete(x):
        return
    arr = np.asarray(x)
    if np.issubdtype(arr.dtype, np.inexact) and np.any(np.isnan(arr)):
        raise ValueError(f"`{name}` has NaN entries.")


def check_rank_at_least(x: Any, rank: int, name: str) -> None:
    """Raises ValueError if `x` has fewer than `rank` dimensions."""
    if jnp.ndim(x) < rank:
        raise ValueError(
            f"`{name}` must have at least {rank} dimension(s), got shape {jnp.shape(x)}."
        )


def check_choice(value: Any, choices: Sequence[Any], name: str) -> Any:
    """Returns `value` if it is one of `choices`, else raises ValueError naming `name`."""
    options = list(choices)
    if not any(value is c or (type(value) is type(c) and value == c) for c in options):
        raise ValueError(f"`{name}` must be one of {options}, got {value!r}.")
    return value


def check_rank(x: Any, rank: int | set[int], name: str, layout: str | None = None) -> None:
    """Raises ValueError unless `x` has rank `rank` (an int or a set of ints).

    The test is `chex.assert_rank` (static, so it works on tracers); its AssertionError,
    which does not name the argument, becomes the cause of a ValueError that does.

    Args:
      x: an array (or anything with a shape).
      rank: the rank, or a set of accepted ranks.
      name: the argument's name, for the message.
      layout: how the message describes the expected shape, e.g. "[batch, latent]".
    """
    try:
        chex.assert_rank(x, rank)
    except AssertionError as err:
        expected = layout or f"of rank {rank}"
        raise ValueError(f"`{name}` must have shape {expected}, got {jnp.shape(x)}.") from err


def check_equal_shape(x: Any, like: Any, name: str, like_name: str) -> None:
    """Raises ValueError unless `x` has the shape of `like` (`chex.assert_equal_shape`)."""
    try:
        chex.assert_equal_shape([x, like])
    except AssertionError as err:
        raise ValueError(
            f"`{name}` must have the shape of `{like_name}` {jnp.shape(like)}, got {jnp.shape(x)}."
        ) from err


def check_callable(f: Any, name: str) -> None:
    """Raises TypeError if `f` is not callable."""
    if not callable(f):
        raise TypeError(f"`{name}` must be callable, got {type(f).__name__}.")


def check_batch_shape(batch_shape: Sequence[int]) -> tuple[int, ...]:
    """Returns `batch_shape` as a tuple of non-negative ints, or raises naming it."""
    try:
        shape = tuple(int(s) for s in batch_shape)
    except TypeError:
        raise TypeError(f"`batch_shape` must be a sequence of ints, got {batch_shape!r}.") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"`batch_shape` must have non-negative sizes, got {shape}.")
    return shape
