"""A VAE seen through the model-agnostic `ModelView` that inference and evaluation take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from vi_jax.models.functional import merge_params
from vi_jax.types import ModelView


def vae_view(
    graphdef: nnx.GraphDef, rest: nnx.State | None = None
) -> Callable[[Any, jax.Array], ModelView]:
    """Returns `view(params, x [B, data]) -> ModelView` of a split VAE (jit-able).

    Args:
      graphdef: static structure from `split_params(vae)`.
      rest: non-parameter state from `split_params(vae)`.

    Returns:
      A function giving the VAE's `log_joint`, `posterior`, `log_likelihood` and `prior`
      for a batch, for `vi_jax.inference.evaluate_model` and per-datapoint inference.
    """

    def view(params: Any, x: jax.Array) -> ModelView:
        vae = merge_params(graphdef, params, rest)
        return ModelView(
            log_joint=vae.log_joint_fn(x),
            posterior=vae.posterior(x),
            log_likelihood=vae.log_likelihood_fn(x),
            prior=vae.prior_distribution(),
            simulate=vae.simulate,
        )

    return view
