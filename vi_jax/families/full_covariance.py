"""The full-covariance Gaussian family: N(loc, L L^T), L lower triangular, diag(L) > 0."""

from __future__ import annotations

import distrax
import jax.numpy as jnp
import numpy as np

from vi_jax.families._base import (
    DEFAULT_MIN_SCALE,
    Family,
    check_count,
    check_params,
    inverse_positive,
    positive,
)
from vi_jax.types import Array


class FullCovarianceGaussian(Family):
    """params `[*batch, 2 D + D (D - 1) / 2]` -> `distrax.MultivariateNormalTri`.

    Layout: loc `[D]`, raw diagonal `[D]` (the Cholesky diagonal is
    `softplus(raw) + min_scale`, so L is always invertible), strict lower triangle
    `[D (D - 1) / 2]` (row-major, free). Cost per sample: O(D^2); log q: a triangular
    solve, O(D^2).
    """

    name = "fullrank"

    def __init__(self, latent_dim: int, *, min_scale: float = DEFAULT_MIN_SCALE) -> None:
        """Builds it.

        Args:
          latent_dim: D >= 1.
          min_scale: floor of the Cholesky diagonal.
        """
        self.latent_dim = check_count(latent_dim, "latent_dim")
        self.min_scale = float(min_scale)
        d = self.latent_dim
        self.param_size = 2 * d + d * (d - 1) // 2
        rows, cols = np.tril_indices(d, -1)
        self._rows, self._cols = tuple(int(r) for r in rows), tuple(int(c) for c in cols)

    def output_gain(self) -> np.ndarray:
        """Ones for loc and the diagonal, `COUPLING_INIT_GAIN` for the off-diagonal."""
        return self._coupling_gain()

    def scale_tri(self, params: Array) -> Array:
        """The Cholesky factor L `[*batch, D, D]` for `params [*batch, param_size]`."""
        params = check_params(params, self.param_size, self.name)
        d = self.latent_dim
        diag = positive(params[..., d : 2 * d], self.min_scale)
        tri = jnp.zeros((*params.shape[:-1], d, d), params.dtype)
        tri = tri.at[..., np.array(self._rows, int), np.array(self._cols, int)].set(
            params[..., 2 * d :]
        )
        return tri + diag[..., None, :] * jnp.eye(d, dtype=params.dtype)

    def __call__(self, params: Array) -> distrax.MultivariateNormalTri:
        """Q for `params [*batch, param_size]`: batch `[*batch]`, event `[D]`."""
        params = check_params(params, self.param_size, self.name)
        return distrax.MultivariateNormalTri(params[..., : self.latent_dim], self.scale_tri(params))

    def init_params(self, loc: Array, scale: Array) -> Array:
        """`[B, param_size]` giving exactly N(loc, diag(scale^2)) (zero off-diagonal)."""
        off = jnp.zeros((*loc.shape[:-1], self.param_size - 2 * self.latent_dim), loc.dtype)
        return jnp.concatenate([loc, inverse_positive(scale, self.min_scale), off], axis=-1)

    def params_of(self, q: distrax.Distribution) -> Array:
        """Params of a `MultivariateNormalTri` or `MultivariateNormalDiag`."""
        if isinstance(q, distrax.MultivariateNormalDiag):
            scale = jnp.broadcast_to(q.scale_diag, q.loc.shape)
            return self.init_params(q.loc, jnp.maximum(scale, 2 * self.min_scale))
        if not isinstance(q, distrax.MultivariateNormalTri):
            raise TypeError(f"`q` must be a MultivariateNormalTri, got {type(q).__name__}.")
        tri = q.scale_tri
        diag = jnp.diagonal(tri, axis1=-2, axis2=-1)
        strict = tri[..., np.array(self._rows, int), np.array(self._cols, int)]
        raw = inverse_positive(jnp.maximum(diag, 2 * self.min_scale), self.min_scale)
        return jnp.concatenate([q.loc, raw, strict], axis=-1)
