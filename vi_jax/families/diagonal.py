"""The diagonal (mean-field) Gaussian family: N(loc, diag(scale^2))."""

from __future__ import annotations

import distrax
import jax.numpy as jnp

from vi_jax.families._base import (
    DEFAULT_MIN_SCALE,
    Family,
    check_count,
    check_params,
    inverse_positive,
    positive,
)
from vi_jax.families.normal import MultivariateNormalDiag
from vi_jax.types import Array


class DiagonalGaussian(Family):
    """params `[*batch, 2 D]` = (loc, raw scale) -> `MultivariateNormalDiag` (`normal.py`).

    The scale is `softplus(raw) + min_scale`. Cost per sample: O(D).
    """

    name = "diag"

    def __init__(self, latent_dim: int, *, min_scale: float = DEFAULT_MIN_SCALE) -> None:
        """Builds it.

        Args:
          latent_dim: D >= 1.
          min_scale: floor of the standard deviations.
        """
        self.latent_dim = check_count(latent_dim, "latent_dim")
        self.min_scale = float(min_scale)
        self.param_size = 2 * self.latent_dim

    def __call__(self, params: Array) -> MultivariateNormalDiag:
        """Q for `params [*batch, 2 D]`: batch `[*batch]`, event `[D]`."""
        params = check_params(params, self.param_size, self.name)
        loc, raw = jnp.split(params, 2, axis=-1)
        return MultivariateNormalDiag(loc, positive(raw, self.min_scale))

    def init_params(self, loc: Array, scale: Array) -> Array:
        """`[B, 2 D]` giving exactly N(loc, diag(scale^2))."""
        return jnp.concatenate([loc, inverse_positive(scale, self.min_scale)], axis=-1)

    def params_of(self, q: distrax.Distribution) -> Array:
        """Params of a `MultivariateNormalDiag` (any diagonal-Gaussian encoder's q)."""
        if not isinstance(q, distrax.MultivariateNormalDiag):
            raise TypeError(f"`q` must be a MultivariateNormalDiag, got {type(q).__name__}.")
        scale = jnp.broadcast_to(q.scale_diag, q.loc.shape)
        return self.init_params(q.loc, jnp.maximum(scale, 2 * self.min_scale))
