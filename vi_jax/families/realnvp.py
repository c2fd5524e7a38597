"""Affine coupling flow (RealNVP, Dinh et al. 2017) on distrax's `MaskedCoupling`.

Step t keeps the coordinates of one parity fixed (mask alternates between steps) and
maps the others by y = x * exp(a) + b, (a, b) = NN_t(x_fixed, context), with
a = max_log_scale * tanh(raw / max_log_scale) bounded so a step never over- or
underflows. Forward and inverse both cost one network pass per step.
"""

from __future__ import annotations

import distrax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vi_jax._validation import check_positive_float
from vi_jax.families._base import DEFAULT_MIN_SCALE
from vi_jax.families._flow import ContextMLP, FlowFamily
from vi_jax.types import Array


def coupling_masks(latent_dim: int, num_steps: int) -> list[np.ndarray]:
    """Boolean masks `[D]` (True = kept fixed), alternating parity step by step."""
    if latent_dim < 2:
        raise ValueError(f"a coupling flow needs `latent_dim` >= 2, got {latent_dim}.")
    return [(np.arange(latent_dim) % 2) == (t % 2) for t in range(num_steps)]


class RealNVP(FlowFamily):
    """Affine-coupling flow family: params `[*batch, 2 D + C]`, D >= 2."""

    name = "realnvp"

    def __init__(
        self,
        latent_dim: int,
        *,
        num_steps: int = 4,
        hidden: int | tuple[int, ...] = 64,
        context_dim: int = 0,
        max_log_scale: float = 3.0,
        min_scale: float = DEFAULT_MIN_SCALE,
        rngs: nnx.Rngs | int = 0,
    ) -> None:
        """Builds it.

        Args:
          latent_dim: D >= 2.
          num_steps: coupling steps >= 1 (use an even number so every coordinate moves).
          hidden: conditioner hidden width(s), each >= 1.
          context_dim: C >= 0, width of the encoder's context.
          max_log_scale: bound > 0 on |log scale| per step.
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
        self.max_log_scale = check_positive_float(max_log_scale, "max_log_scale")
        coupling_masks(self.latent_dim, self.num_steps)
        rngs = nnx.Rngs(rngs) if isinstance(rngs, int) else rngs
        self.steps = nnx.List(
            [
                ContextMLP(
                    self.latent_dim, self.context_dim, self.hidden, 2 * self.latent_dim, rngs=rngs
                )
                for _ in range(self.num_steps)
            ]
        )
        self._check_construction()

    def _coupling(self, i: int, ctx: Array | None) -> distrax.MaskedCoupling:
        mask = coupling_masks(self.latent_dim, self.num_steps)[i]
        net, bound = self.steps[i], self.max_log_scale

        def conditioner(x_fixed: Array) -> Array:
            out = net(x_fixed, None if ctx is None else ctx.astype(x_fixed.dtype))
            return out.reshape(*out.shape[:-1], self.latent_dim, 2)

        def bijector(p: Array) -> distrax.ScalarAffine:
            return distrax.ScalarAffine(
                shift=p[..., 0], log_scale=bound * jnp.tanh(p[..., 1] / bound)
            )

        return distrax.MaskedCoupling(mask, conditioner, bijector)

    def _step_forward(self, i: int, x: Array, ctx: Array | None) -> tuple[Array, Array]:
        return self._coupling(i, ctx).forward_and_log_det(x)

    def _step_inverse(self, i: int, y: Array, ctx: Array | None) -> tuple[Array, Array]:
        x, inv_logdet = self._coupling(i, ctx).inverse_and_log_det(y)
        return x, -inv_logdet
