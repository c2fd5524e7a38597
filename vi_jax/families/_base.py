"""Shared pieces of the variational families: positive scales, argument checks, base class.

A *family* is an `nnx.Module` that turns a per-datum parameter vector `params
[*batch, param_size]` into a distrax distribution with batch `[*batch]` and event
`[latent_dim]`. An amortised encoder outputs `params` from x; per-datapoint SVI frees
them (and, for flows, a per-datum copy of the network weights: see `local`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vi_jax.types import Array, PyTree

DEFAULT_MIN_SCALE = 1e-4
"""Floor added to every softplus scale so that a scale is never zero."""
COUPLING_INIT_GAIN = 0.1
"""Scale of an encoder's initial outputs for the params that couple latent dimensions
(see `Family.output_gain`): q starts near a diagonal Gaussian."""


def positive(raw: Array, min_scale: float = DEFAULT_MIN_SCALE) -> Array:
    """`softplus(raw) + min_scale`: finite, strictly positive for any finite `raw`."""
    return jax.nn.softplus(raw) + jnp.asarray(min_scale, dtype=jnp.result_type(raw))


def inverse_positive(scale: Array, min_scale: float = DEFAULT_MIN_SCALE) -> Array:
    """The raw value whose `positive` is `scale` (> min_scale), elementwise."""
    y = jnp.asarray(scale) - min_scale
    # log(exp(y) - 1) = y + log(-expm1(-y)): stable for large y.
    return y + jnp.log(-jnp.expm1(-y))


def check_count(value: Any, name: str) -> int:
    """An int >= 1 (a number of steps, a width, a rank), or a clear error naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}: {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")
    return int(value)


def check_hidden(hidden: Any, name: str = "hidden") -> tuple[int, ...]:
    """A non-empty tuple of hidden widths >= 1 (an int means one layer)."""
    if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if not isinstance(hidden, tuple | list) or not hidden:
        raise TypeError(f"`{name}` must be an int or a non-empty sequence of ints, got {hidden!r}.")
    return tuple(check_count(h, f"{name}[{i}]") for i, h in enumerate(hidden))


def check_params(params: Array, param_size: int, family: str) -> Array:
    """`params` as an array `[*batch, param_size]`, or a ValueError naming `params`."""
    params = jnp.asarray(params)
    if params.ndim < 1 or params.shape[-1] != param_size:
        raise ValueError(
            f"`params` of the {family} family must have shape [*batch, {param_size}], "
            f"got {params.shape}."
        )
    return params


def check_event(x: Array, latent_dim: int, name: str) -> Array:
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != latent_dim:
        raise ValueError(f"`{name}` must have shape [..., {latent_dim}], got {x.shape}.")
    return x


def std_normal_log_prob(eps: Array) -> Array:
    """Log N(eps; 0, I) summed over the last axis."""
    d = eps.shape[-1]
    return -0.5 * jnp.sum(eps**2, axis=-1) - 0.5 * d * math.log(2 * math.pi)


def broadcast_batched(tree: PyTree, batch: int) -> PyTree:
    """Every leaf of `tree` repeated along a new leading axis of size `batch`."""
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (batch, *jnp.shape(a))), tree)


class Family(nnx.Module):
    """Base class: `family(params [*batch, param_size]) -> q` (batch `[*batch]`).

    Subclasses define `param_size`, `name`, `__call__`, `init_params` and `params_of`.
    Gaussian families have no network weights: `net_state()` is empty and `local`
    equals `__call__`.
    """

    name: str = "family"
    latent_dim: int
    param_size: int

    def __call__(self, params: Array) -> distrax.Distribution:
        raise NotImplementedError

    def init_params(self, loc: Array, scale: Array) -> Array:
        """Per-datum params `[B, param_size]` of (or near) N(loc, diag(scale^2))."""
        raise NotImplementedError

    def params_of(self, q: distrax.Distribution) -> Array:
        """The per-datum params `[B, param_size]` that produced `q` (for warm starts)."""
        raise NotImplementedError

    def output_gain(self) -> np.ndarray:
        """`[param_size]` factors for an encoder's initial output layer (ones by default).

        A family whose params couple the latent dimensions (a Cholesky factor's
        off-diagonal, low-rank factors) shrinks those at initialisation, so that an
        amortised q starts near a diagonal Gaussian instead of one with O(1) random
        correlations that the first epochs of training would spend undoing.
        """
        return np.ones(self.param_size, np.float32)

    def _coupling_gain(self) -> np.ndarray:
        """Ones for loc and the diagonal (the first 2 D params), `COUPLING_INIT_GAIN` after.

        The `output_gain` of the families laid out as (loc, diagonal, coupling params).
        """
        gain = np.ones(self.param_size, np.float32)
        gain[2 * self.latent_dim :] = COUPLING_INIT_GAIN
        return gain

    def net_state(self) -> PyTree:
        """The family's network weights as a pytree (empty for Gaussians)."""
        return {}

    def net_of(self, q: distrax.Distribution) -> PyTree:
        """The network weights inside `q` (empty for Gaussians)."""
        del q
        return {}

    def local_net(self, batch: int, q: distrax.Distribution | None = None) -> PyTree:
        """Per-datum network weights for `local` (leaves `[batch, ...]`; empty here)."""
        del batch, q
        return {}

    def local(self, params: Array, net: PyTree) -> distrax.Distribution:
        """Q with its own network weights per datum: `net` leaves have a leading `[B]`."""
        del net
        return self(params)
