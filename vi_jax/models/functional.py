"""Stateless use of NNX modules: split a model into (graphdef, params, rest) and back.

Training is purely functional over the parameter pytree: split once, outside any
transformation; inside the compiled loss, `merge_params` rebuilds the module from the
(traced) parameters. Merging runs only while JAX traces the function, so inside
`jax.jit` it costs nothing per step; called eagerly it costs tens of microseconds of
Python per call (rebuild the object graph), so do not merge in a hot Python loop.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """Splits `model` into its static structure, trainable parameters and other state.

    Args:
      model: an NNX module.

    Returns:
      `(graphdef, params, rest)`: `graphdef` is static (hashable, closes over no
      arrays), `params` the `nnx.Param` variables (the pytree an optimiser updates),
      `rest` every other variable (empty for the modules of `vi_jax.models`).
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"`model` must be an nnx.Module, got {type(model).__name__}.")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest


def merge_params(
    graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State | None = None
) -> nnx.Module:
    """Rebuilds the module from `split_params`' outputs (works on traced params).

    Args:
      graphdef: from `split_params`.
      params: parameters with the structure `split_params` returned (possibly updated).
      rest: the other state from `split_params`; None when it was empty.

    Returns:
      A new module instance holding `params` (the original model is not modified).
    """
    if not isinstance(graphdef, nnx.GraphDef):
        raise TypeError(
            f"`graphdef` must be an nnx.GraphDef (from `split_params`), got "
            f"{type(graphdef).__name__}."
        )
    if rest is None:
        return nnx.merge(graphdef, params)
    return nnx.merge(graphdef, params, rest)


def count_params(params: nnx.State) -> int:
    """Total number of scalar parameters in a parameter pytree."""
    return int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))
