"""Rational-quadratic spline coupling flow (Durkan et al. 2019, "Neural Spline Flows").

Step t keeps one parity of coordinates fixed and maps each other coordinate by a
monotone rational-quadratic spline with `num_bins` bins on [-bound, bound] (identity
outside, matching slopes 1 at the ends), built on distrax's `RationalQuadraticSpline`
inside `MaskedCoupling`; the spline's knots come from an NNX network of the fixed
coordinates and the context. Forward and inverse: one network pass per step (the
spline inverse is a closed-form quadratic root).
"""

from __future__ import annotations

import distrax
from flax import nnx

from vi_jax._validation import check_positive_float
from vi_jax.families._base import DEFAULT_MIN_SCALE, check_count
from vi_jax.families._flow import ContextMLP, FlowFamily
from vi_jax.families.realnvp import coupling_masks
from vi_jax.types import Array


class SplineFlow(FlowFamily):
    """Spline-coupling flow family: params `[*batch, 2 D + C]`, D >= 2."""

    name = "spline"

    def __init__(
        self,
        latent_dim: int,
        *,
        num_steps: int = 4,
        hidden: int | tuple[int, ...] = 64,
        context_dim: int = 0,
        num_bins: int = 8,
        bound: float = 5.0,
        min_scale: float = DEFAULT_MIN_SCALE,
        rngs: nnx.Rngs | int = 0,
    ) -> None:
        """Builds it.

        Args:
          latent_dim: D >= 2.
          num_steps: coupling steps >= 1.
          hidden: conditioner hidden width(s), each >= 1.
          context_dim: C >= 0.
          num_bins: spline bins >= 1.
          bound: the spline acts on [-bound, bound] (of the standardised noise), > 0.
          min_scale: floor of the final scale.
          rngs: `nnx.Rngs` or int seed.
        """
        super().__init__(
            latent_dim,
            num_steps=num_steps,
            hidden=hidden,
            context_dim=context_dim,
            min_scale=min_scale,
        )
        self.num_bins = check_count(num_bins, "num_bins")
        self.bound = check_positive_float(bound, "bound")
        coupling_masks(self.latent_dim, self.num_steps)
        rngs = nnx.Rngs(rngs) if isinstance(rngs, int) else rngs
        width = 3 * self.num_bins + 1
        self.steps = nnx.List(
            [
                ContextMLP(
                    self.latent_dim,
                    self.context_dim,
                    self.hidden,
                    width * self.latent_dim,
                    rngs=rngs,
                )
                for _ in range(self.num_steps)
            ]
        )
        self._check_construction()

    def _coupling(self, i: int, ctx: Array | None) -> distrax.MaskedCoupling:
        mask = coupling_masks(self.latent_dim, self.num_steps)[i]
        net, width = self.steps[i], 3 * self.num_bins + 1

        def conditioner(x_fixed: Array) -> Array:
            out = net(x_fixed, None if ctx is None else ctx.astype(x_fixed.dtype))
            return out.reshape(*out.shape[:-1], self.latent_dim, width)

        def bijector(p: Array) -> distrax.RationalQuadraticSpline:
            return distrax.RationalQuadraticSpline(
                p, range_min=-self.bound, range_max=self.bound, boundary_slopes="identity"
            )

        return distrax.MaskedCoupling(mask, conditioner, bijector)

    def _step_forward(self, i: int, x: Array, ctx: Array | None) -> tuple[Array, Array]:
        return self._coupling(i, ctx).forward_and_log_det(x)

    def _step_inverse(self, i: int, y: Array, ctx: Array | None) -> tuple[Array, Array]:
        x, inv_logdet = self._coupling(i, ctx).inverse_and_log_det(y)
        return x, -inv_logdet
