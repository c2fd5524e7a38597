"""The training state: parameters, optimiser state and step counter in one pytree."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from vi_jax.types import Array, PyTree


class TrainState(NamedTuple):
    """State of a gradient-based training run (a pytree; jit, donate and checkpoint it).

    Attributes:
      params: the parameter pytree being optimised (any structure of arrays).
      opt_state: the optax optimiser state for `params`.
      step: number of updates applied so far, an int32 scalar array `[]`.
    """

    params: PyTree
    opt_state: optax.OptState
    step: Array


def init_train_state(params: PyTree, optimizer: optax.GradientTransformation) -> TrainState:
    """Builds the initial `TrainState` for `params` and `optimizer` with `step == 0`.

    Args:
      params: the initial parameter pytree (arrays of any shapes).
      optimizer: an optax gradient transformation.

    Returns:
      `TrainState(params, optimizer.init(params), step=int32 0)`.

    Raises:
      TypeError: if `optimizer` is not an optax gradient transformation.
    """
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            "`optimizer` must be an optax GradientTransformation (with `init` and `update`), "
            f"got {type(optimizer).__name__}."
        )
    params = jax.tree.map(jnp.asarray, params)
    return TrainState(
        params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32)
    )
