"""Variational families: each maps per-datum params to a distrax distribution.

Example::

    family = make_family("iaf", latent_dim=2, flow_steps=2, flow_hidden=32)
    q = family(params)            # params [*batch, family.param_size] -> batch [*batch]

Gaussian families (`DiagonalGaussian`, whose q is `MultivariateNormalDiag`: distrax's, with
its noise drawn by `vi_jax._prng`; `FullCovarianceGaussian`, `LowRankGaussian`) and
normalising flows (`IAF`, `RealNVP`, `SplineFlow`: z = loc + scale * T(eps; context)).
Every continuous q is reparameterised and gives `sample_and_log_prob` in one pass, so
every estimator in `vi_jax.estimators` takes it unchanged. Discrete families
(`factorised_bernoulli`, `GroupedOneHot`) are for the discrete-capable estimators.
"""

from __future__ import annotations

from flax import nnx

from vi_jax.families._base import COUPLING_INIT_GAIN, DEFAULT_MIN_SCALE, Family, positive
from vi_jax.families._flow import FlowDistribution, FlowFamily
from vi_jax.families.bernoulli import factorised_bernoulli
from vi_jax.families.categorical import GroupedOneHot, grouped_one_hot
from vi_jax.families.diagonal import DiagonalGaussian
from vi_jax.families.full_covariance import FullCovarianceGaussian
from vi_jax.families.iaf import IAF, MADE, MaskedLinear
from vi_jax.families.low_rank import LowRankGaussian, LowRankMultivariateNormal
from vi_jax.families.normal import MultivariateNormalDiag
from vi_jax.families.realnvp import RealNVP
from vi_jax.families.spline import SplineFlow

CONTINUOUS_FAMILIES = ("diag", "fullrank", "lowrank", "iaf", "realnvp", "spline")
"""Names accepted by `make_family` (and by `--posterior` in `vi-jax train`)."""

FLOW_FAMILIES = ("iaf", "realnvp", "spline")
"""The normalising-flow names among `CONTINUOUS_FAMILIES`."""


def make_family(
    name: str,
    latent_dim: int,
    *,
    flow_steps: int = 2,
    flow_hidden: int | tuple[int, ...] = 64,
    context_dim: int = 0,
    rank: int = 2,
    min_scale: float = DEFAULT_MIN_SCALE,
    rngs: nnx.Rngs | int = 0,
) -> Family:
    """The family called `name` over `[latent_dim]`.

    Args:
      name: one of `CONTINUOUS_FAMILIES`.
      latent_dim: D >= 1 (>= 2 for the coupling flows).
      flow_steps: number of flow steps >= 1 (flows only).
      flow_hidden: hidden width(s) of the flow networks, each >= 1 (flows only).
      context_dim: width C >= 0 of the context a flow takes from the encoder.
      rank: number of covariance factors >= 1 ("lowrank" only).
      min_scale: floor of the scales.
      rngs: `nnx.Rngs` or int seed (flows only).

    Returns:
      The family module; `family.param_size` is the width of its per-datum params.
    """
    if not isinstance(name, str) or name not in CONTINUOUS_FAMILIES:
        raise ValueError(f"`name` must be one of {list(CONTINUOUS_FAMILIES)}, got {name!r}.")
    if name == "diag":
        return DiagonalGaussian(latent_dim, min_scale=min_scale)
    if name == "fullrank":
        return FullCovarianceGaussian(latent_dim, min_scale=min_scale)
    if name == "lowrank":
        return LowRankGaussian(latent_dim, rank, min_scale=min_scale)
    cls = {"iaf": IAF, "realnvp": RealNVP, "spline": SplineFlow}[name]
    return cls(
        latent_dim,
        num_steps=flow_steps,
        hidden=flow_hidden,
        context_dim=context_dim,
        min_scale=min_scale,
        rngs=rngs,
    )


__all__ = [
    "CONTINUOUS_FAMILIES",
    "COUPLING_INIT_GAIN",
    "DEFAULT_MIN_SCALE",
    "FLOW_FAMILIES",
    "IAF",
    "MADE",
    "DiagonalGaussian",
    "Family",
    "FlowDistribution",
    "FlowFamily",
    "FullCovarianceGaussian",
    "GroupedOneHot",
    "LowRankGaussian",
    "LowRankMultivariateNormal",
    "MaskedLinear",
    "MultivariateNormalDiag",
    "RealNVP",
    "SplineFlow",
    "factorised_bernoulli",
    "grouped_one_hot",
    "make_family",
    "positive",
]
