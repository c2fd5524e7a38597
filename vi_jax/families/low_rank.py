"""The low-rank-plus-diagonal Gaussian family: N(loc, diag(d^2) + W W^T), W `[D, r]`.

The covariance of Ong, Nott & Smith (2018): r factors capture the leading correlations
at O(D r) cost per sample and O(D r^2 + r^3) per log q (Woodbury identity and the
matrix determinant lemma), against O(D^2) / O(D^3) for a full covariance.
"""

from __future__ import annotations

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vi_jax import _prng
from vi_jax.families._base import (
    DEFAULT_MIN_SCALE,
    Family,
    check_count,
    check_params,
    inverse_positive,
    positive,
)
from vi_jax.types import Array


class LowRankMultivariateNormal(distrax.Distribution):
    """N(loc, diag(diag^2) + factor factor^T): batch `[*batch]`, event `[D]`.

    Sampling is reparameterised: z = loc + diag * e1 + factor @ e2, e1 `[D]`, e2 `[r]`.
    """

    def __init__(self, loc: Array, diag: Array, factor: Array) -> None:
        """Builds it.

        Args:
          loc: `[*batch, D]`.
          diag: positive standard deviations of the diagonal part, `[*batch, D]`.
          factor: W `[*batch, D, r]`.
        """
        super().__init__()
        self.loc = jnp.asarray(loc)
        self.diag = jnp.broadcast_to(jnp.asarray(diag, self.loc.dtype), self.loc.shape)
        self.factor = jnp.asarray(factor, self.loc.dtype)
        if self.factor.shape[:-1] != self.loc.shape:
            raise ValueError(
                f"`factor` must have shape [*batch, D, r] with [*batch, D] = {self.loc.shape}, "
                f"got {self.factor.shape}."
            )

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The event shape `(D,)`."""
        return self.loc.shape[-1:]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The batch shape `[*batch]`."""
        return self.loc.shape[:-1]

    @property
    def dtype(self):  # noqa: ANN201
        """The dtype of samples."""
        return self.loc.dtype

    @property
    def rank(self) -> int:
        """r, the number of covariance factors."""
        return self.factor.shape[-1]

    def _sample_n(self, key: Array, n: int) -> Array:
        k1, k2 = jax.random.split(key)
        e1 = _prng.normal(k1, (n, *self.loc.shape), self.loc.dtype)
        e2 = _prng.normal(k2, (n, *self.batch_shape, self.rank), self.loc.dtype)
        return self.loc + self.diag * e1 + jnp.einsum("...dr,n...r->n...d", self.factor, e2)

    def _inner(self) -> tuple[Array, Array]:
        """`(A, logdet)`: A = W^T D^-1 with the C^-1/2 whitening, and log det Sigma."""
        inv_d2 = self.diag**-2
        w_scaled = self.factor * inv_d2[..., :, None]  # D^-1 W
        cap = jnp.eye(self.rank, dtype=self.loc.dtype) + jnp.einsum(
            "...dr,...ds->...rs", self.factor, w_scaled
        )
        chol = jnp.linalg.cholesky(cap)
        logdet = 2 * jnp.sum(jnp.log(self.diag), -1) + 2 * jnp.sum(
            jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1
        )
        # C^-1/2 W^T D^-1: rows of the Woodbury correction.
        eye = jnp.broadcast_to(jnp.eye(self.rank, dtype=chol.dtype), chol.shape)
        chol_inv = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
        return jnp.einsum("...rs,...ds->...rd", chol_inv, w_scaled), logdet

    def log_prob(self, value: Array) -> Array:
        """Log q(z) for z `[*s, *batch, D]` -> `[*s, *batch]`."""
        r = jnp.asarray(value) - self.loc
        a, logdet = self._inner()
        quad = jnp.sum(r**2 * self.diag**-2, -1) - jnp.sum(
            jnp.einsum("...rd,...d->...r", a, r) ** 2, -1
        )
        d = self.loc.shape[-1]
        return -0.5 * (quad + logdet + d * math.log(2 * math.pi))

    def mean(self) -> Array:
        """E[z] `[*batch, D]`."""
        return self.loc

    def covariance(self) -> Array:
        """`[*batch, D, D]`."""
        eye = jnp.eye(self.loc.shape[-1], dtype=self.loc.dtype)
        low_rank = jnp.einsum("...dr,...er->...de", self.factor, self.factor)
        return low_rank + self.diag[..., :, None] ** 2 * eye

    def entropy(self) -> Array:
        """Entropy `[*batch]` (closed form)."""
        _, logdet = self._inner()
        d = self.loc.shape[-1]
        return 0.5 * (logdet + d * (1 + math.log(2 * math.pi)))


class LowRankGaussian(Family):
    """params `[*batch, D (2 + r)]` = (loc, raw diag, W row-major) -> low-rank Gaussian."""

    name = "lowrank"

    def __init__(
        self, latent_dim: int, rank: int = 2, *, min_scale: float = DEFAULT_MIN_SCALE
    ) -> None:
        """Builds it.

        Args:
          latent_dim: D >= 1.
          rank: r >= 1, the number of covariance factors.
          min_scale: floor of the diagonal standard deviations.
        """
        self.latent_dim = check_count(latent_dim, "latent_dim")
        self.rank = check_count(rank, "rank")
        self.min_scale = float(min_scale)
        self.param_size = self.latent_dim * (2 + self.rank)

    def output_gain(self) -> np.ndarray:
        """Ones for loc and the diagonal, `COUPLING_INIT_GAIN` for the factors W."""
        return self._coupling_gain()

    def __call__(self, params: Array) -> LowRankMultivariateNormal:
        """Q for `params [*batch, param_size]`: batch `[*batch]`, event `[D]`."""
        params = check_params(params, self.param_size, self.name)
        d = self.latent_dim
        factor = params[..., 2 * d :].reshape(*params.shape[:-1], d, self.rank)
        return LowRankMultivariateNormal(
            params[..., :d], positive(params[..., d : 2 * d], self.min_scale), factor
        )

    def init_params(self, loc: Array, scale: Array) -> Array:
        """`[B, param_size]`: diagonal part `scale`, small equal factors.

        Not exactly zero: at W = 0 the factors' gradient vanishes (a saddle).
        """
        d = self.latent_dim
        factor = 1e-2 * jnp.ones((*loc.shape[:-1], d * self.rank), loc.dtype)
        return jnp.concatenate([loc, inverse_positive(scale, self.min_scale), factor], -1)

    def params_of(self, q: distrax.Distribution) -> Array:
        """Params of a `LowRankMultivariateNormal` or a `MultivariateNormalDiag`."""
        if isinstance(q, distrax.MultivariateNormalDiag):
            scale = jnp.broadcast_to(q.scale_diag, q.loc.shape)
            return self.init_params(q.loc, jnp.maximum(scale, 2 * self.min_scale))
        if not isinstance(q, LowRankMultivariateNormal):
            raise TypeError(f"`q` must be a LowRankMultivariateNormal, got {type(q).__name__}.")
        raw = inverse_positive(jnp.maximum(q.diag, 2 * self.min_scale), self.min_scale)
        flat = q.factor.reshape(*q.factor.shape[:-2], -1)
        return jnp.concatenate([q.loc, raw, flat], -1)
