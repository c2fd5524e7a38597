"""Amortised encoders: q(z | x) = N(loc(x), diag(scale(x)^2)), or any variational family.

`FamilyEncoder(net, family)` makes `q(z | x) = family(net(x))` for any family of
`vi_jax.families` (full-covariance, low-rank, IAF, RealNVP, spline): the network
outputs the family's per-datum params (for a flow: loc, raw scale and a context vector
that conditions the flow's networks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import distrax
import jax
import jax.numpy as jnp
from flax import nnx

from vi_jax._validation import check_positive_float
from vi_jax.families import FLOW_FAMILIES, Family, MultivariateNormalDiag, make_family
from vi_jax.models.networks import MLP, check_width
from vi_jax.types import Array

DEFAULT_MIN_SCALE = 1e-4
"""Floor added to every softplus scale so that a scale is never zero."""


def softplus_scale(raw: Array, min_scale: float = DEFAULT_MIN_SCALE) -> Array:
    """Maps an unconstrained array to positive scales: `softplus(raw) + min_scale`.

    Numerically safe for any finite `raw`: very negative raw gives exactly `min_scale`
    (no zero, no -inf in log scale), very positive raw gives `raw` (no overflow).

    Args:
      raw: unconstrained array, any shape.
      min_scale: floor > 0.

    Returns:
      Scales of the same shape, all >= `min_scale`.
    """
    return jax.nn.softplus(raw) + jnp.asarray(min_scale, dtype=jnp.result_type(raw))


def inverse_softplus_scale(scale: float, min_scale: float = DEFAULT_MIN_SCALE) -> float:
    """The raw value whose `softplus_scale` is `scale` (for initialising at a given scale)."""
    shifted = scale - min_scale
    if shifted <= 0:
        raise ValueError(f"`scale` must exceed `min_scale` = {min_scale}, got {scale}.")
    # log(exp(y) - 1) = y + log(1 - exp(-y)), stable for large y.
    return shifted + math.log(-math.expm1(-shifted))


class GaussianEncoder(nnx.Module):
    """q(z | x) = MultivariateNormalDiag(loc(x), scale(x)), amortised by a network.

    q is `vi_jax.families.MultivariateNormalDiag` (a `distrax.MultivariateNormalDiag`
    whose noise comes from `vi_jax._prng`).

    The network maps `x [*batch, data]` to `[*batch, 2 * latent]`; the first half is
    the mean, the second half the raw scale, made positive by `softplus_scale`.

    Attributes:
      net: the network (any module with this signature, e.g. `MLP`, `ConvEncoderNet`).
      latent_dim: D.
      min_scale: floor of the standard deviations.
    """

    def __init__(
        self, net: nnx.Module, latent_dim: int, *, min_scale: float = DEFAULT_MIN_SCALE
    ) -> None:
        """Wraps `net`.

        Args:
          net: module mapping `[*batch, data] -> [*batch, 2 * latent_dim]`.
          latent_dim: D >= 1.
          min_scale: floor > 0 added to every standard deviation.
        """
        if not isinstance(net, nnx.Module):
            raise TypeError(f"`net` must be an nnx.Module, got {type(net).__name__}.")
        self.latent_dim = check_width(latent_dim, "latent_dim")
        out = getattr(net, "out_features", None)
        if out is not None and out != 2 * self.latent_dim:
            raise ValueError(
                f"`net` must output 2 * latent_dim = {2 * self.latent_dim} features "
                f"(mean and raw scale), but its out_features is {out}."
            )
        self.data_dim = getattr(net, "in_features", None)
        self.min_scale = check_positive_float(min_scale, "min_scale")
        self.net = net

    @classmethod
    def mlp(
        cls,
        data_dim: int,
        hidden: Sequence[int],
        latent_dim: int,
        *,
        activation: str = "relu",
        min_scale: float = DEFAULT_MIN_SCALE,
        rngs: nnx.Rngs | int,
    ) -> GaussianEncoder:
        """An encoder whose network is `MLP(data_dim, hidden, 2 * latent_dim)`."""
        latent_dim = check_width(latent_dim, "latent_dim")
        net = MLP(data_dim, hidden, 2 * latent_dim, activation=activation, rngs=rngs)
        return cls(net, latent_dim, min_scale=min_scale)

    def loc_scale(self, x: Array) -> tuple[Array, Array]:
        """The raw Gaussian parameters.

        Args:
          x: data `[*batch, data]`.

        Returns:
          `(loc, scale)`, each `[*batch, latent]`; scale >= min_scale > 0.
        """
        out = self.net(x)
        if jnp.shape(out)[-1] != 2 * self.latent_dim:
            raise ValueError(
                f"`net` must output 2 * latent_dim = {2 * self.latent_dim} features, got "
                f"shape {jnp.shape(out)}."
            )
        loc, raw = jnp.split(out, 2, axis=-1)
        return loc, softplus_scale(raw, self.min_scale)

    def __call__(self, x: Array) -> MultivariateNormalDiag:
        """q(z | x): batch `[*batch]`, event `[latent]`, for x `[*batch, data]`."""
        loc, scale = self.loc_scale(x)
        return MultivariateNormalDiag(loc, scale)

    def distribution_and_params(self, x: Array) -> tuple[MultivariateNormalDiag, Array, Array]:
        """`(q, loc, scale)`: the distribution and its parameters `[*batch, latent]`."""
        loc, scale = self.loc_scale(x)
        return MultivariateNormalDiag(loc, scale), loc, scale


class FamilyEncoder(nnx.Module):
    """q(z | x) = family(net(x)), for any `vi_jax.families.Family`.

    Attributes:
      net: module `[*batch, data] -> [*batch, family.param_size]`.
      family: the variational family (for a flow, holds the flow's weights).
      latent_dim: D.
    """

    def __init__(self, net: nnx.Module, family: Family) -> None:
        """Wraps `net` and `family`; their widths must agree."""
        if not isinstance(net, nnx.Module):
            raise TypeError(f"`net` must be an nnx.Module, got {type(net).__name__}.")
        if not isinstance(family, Family):
            raise TypeError(
                f"`family` must be a vi_jax.families.Family, got {type(family).__name__}."
            )
        out = getattr(net, "out_features", None)
        if out is not None and out != family.param_size:
            raise ValueError(
                f"`net` must output family.param_size = {family.param_size} features, but its "
                f"out_features is {out}."
            )
        self.net = net
        self.family = family
        self.latent_dim = family.latent_dim
        self.data_dim = getattr(net, "in_features", None)

    @classmethod
    def mlp(
        cls,
        data_dim: int,
        hidden: Sequence[int],
        latent_dim: int,
        posterior: str,
        *,
        flow_steps: int = 2,
        flow_hidden: int = 64,
        flow_context: int = 16,
        rank: int = 2,
        activation: str = "relu",
        min_scale: float = DEFAULT_MIN_SCALE,
        rngs: nnx.Rngs | int,
    ) -> FamilyEncoder:
        """An MLP encoder for the family called `posterior` (see `make_family`).

        Flows get a context of width `flow_context` from the encoder's network.
        """
        latent_dim = check_width(latent_dim, "latent_dim")
        rngs = nnx.Rngs(rngs) if isinstance(rngs, int) else rngs
        family = make_family(
            posterior,
            latent_dim,
            flow_steps=flow_steps,
            flow_hidden=flow_hidden,
            context_dim=check_width(flow_context, "flow_context")
            if posterior in FLOW_FAMILIES
            else 0,
            rank=rank,
            min_scale=min_scale,
            rngs=rngs,
        )
        net = MLP(data_dim, hidden, family.param_size, activation=activation, rngs=rngs)
        last = net.layers[-1]
        gain = jnp.asarray(family.output_gain(), last.kernel.dtype)
        last.kernel[...] = last.kernel[...] * gain
        if last.bias is not None:
            last.bias[...] = last.bias[...] * gain
        return cls(net, family)

    def params(self, x: Array) -> Array:
        """The family's per-datum params `[*batch, param_size]` for x `[*batch, data]`."""
        out = self.net(x)
        if jnp.shape(out)[-1] != self.family.param_size:
            raise ValueError(
                f"`net` must output family.param_size = {self.family.param_size} features, "
                f"got shape {jnp.shape(out)}."
            )
        return out

    def __call__(self, x: Array) -> distrax.Distribution:
        """q(z | x): batch `[*batch]`, event `[latent]`, for x `[*batch, data]`."""
        return self.family(self.params(x))
