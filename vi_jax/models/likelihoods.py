"""Observation models p(x | z): distrax likelihoods and the decoders that produce them.

A decoder maps latents `z [*lead, latent]` to a distribution with batch `[*lead]` and
event `[data]`; its `log_prob(x)` broadcasts `x [*batch, data]` against
`[K, *batch, data]` parameters, giving `[K, *batch]`.
"""

from __future__ import annotations

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.custom_derivatives import SymbolicZero

from vi_jax._validation import check_positive_float, check_rank_at_least, is_concrete
from vi_jax.models.encoders import inverse_softplus_scale, softplus_scale
from vi_jax.models.networks import check_width
from vi_jax.types import Array

DEFAULT_MIN_OBS_SCALE = 1e-3
"""Floor of a learned Gaussian observation scale (keeps log p(x|z) bounded above)."""


@jax.custom_jvp
def _softplus(logits: Array) -> Array:
    """`jax.nn.softplus` (same value, same forward program) with a cheaper derivative.

    `jax.nn.softplus` is `logaddexp(l, 0)`, whose JVP recomputes `exp(l - softplus(l))`:
    a third transcendental per element on top of the forward `exp` and `log1p`. Here the
    derivative sigmoid(l) comes from the forward pass's `u = exp(-|l|)`
    (`1 / (1 + u)` for l >= 0, `u / (1 + u)` below), as in NumPyro's Bernoulli. Measured
    in `benchmarks/throughput_numpyro.py` on the decoder's `[K, B, 784]` logits: 3-6%
    less CPU time per value-and-gradient step. Exact at +-inf (sigmoid 1 / 0), NaN in
    gives NaN out, and the rule is itself differentiable (Hessians work).
    """
    return jax.nn.softplus(logits)


def _softplus_and_sigmoid(logits: Array) -> tuple[Array, Array]:
    """`(softplus(l), sigmoid(l))` from one `u = exp(-|l|)`: the derivative rules' shared core."""
    u = jnp.exp(-jnp.abs(logits))
    value = jnp.maximum(logits, 0) + jnp.log1p(u)
    sigmoid = jnp.where(logits >= 0, 1.0, u) / (1.0 + u)
    return value, sigmoid


@_softplus.defjvp
def _softplus_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (logits,), (dlogits,) = primals, tangents
    value, sigmoid = _softplus_and_sigmoid(logits)
    return value, sigmoid * dlogits


def _outside(value: Array) -> Array:
    """Data outside [0, 1] (zero mass). A NaN is not outside: NaN in gives NaN out."""
    return (value < 0) | (value > 1)


def _check_support(value: Array) -> None:
    """Refuses concrete data outside [0, 1] (ValueError naming `x`); traced data passes."""
    if is_concrete(value):
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.number) and np.any((arr < 0) | (arr > 1)):
            raise ValueError(
                f"`x` has {int(np.sum((arr < 0) | (arr > 1)))} values outside [0, 1], "
                "the support of a Bernoulli likelihood (binarise or rescale the data)."
            )


class LogitBernoulli(distrax.Bernoulli):
    """`distrax.Bernoulli` parameterised by logits with a cheaper, equal `log_prob`.

    `log_prob(x) = x * logits - softplus(logits)`, which equals distrax's
    `x * log sigmoid(l) + (1 - x) * log sigmoid(-l)` (and is as stable: softplus does
    not overflow) with one softplus instead of two and no `multiply_no_nan` select;
    on CPU it halves the cost of the likelihood and its gradient. The softplus's
    derivative reuses the forward pass's `exp(-|l|)` (`_softplus`), one transcendental
    per logit fewer in every gradient (benchmarks/README.md, "Issue 19 (2026-12-02)").
    Summed over an image, `bernoulli_likelihood` goes further (`bernoulli_row_log_prob`).
    """

    def log_prob(self, value: Array) -> Array:
        """Elementwise log p(value), value in {0, 1} (or a grey level in [0, 1]).

        A value outside [0, 1] is outside the support: concrete ones are refused
        (ValueError naming `x`), traced ones get log p = -inf (zero mass).
        """
        _check_support(value)
        logits = self.logits
        return jnp.where(_outside(value), -jnp.inf, value * logits - _softplus(logits))


LOG1P_GROUP_MAX = 112
"""Most factors `1 + exp(-|l|)` (each in (1, 2]) multiplied before one `log` is taken."""


def _group_size(size: int, dtype: jnp.dtype) -> int:
    """The largest divisor of `size` whose product of factors <= 2 cannot overflow `dtype`."""
    cap = min(LOG1P_GROUP_MAX, int(jnp.finfo(dtype).maxexp) - 1)
    return max(g for g in range(1, min(cap, size) + 1) if size % g == 0)


def _sum_log1p(u: Array) -> Array:
    """`sum(log1p(u), -1)` for u in [0, 1], with one `log` per group of factors.

    `log1p` is the costliest step of the Bernoulli log-likelihood on a CPU (about three
    times `exp`'s time, benchmarks/README.md "Issue 19, session 5"); `1 + u` lies in
    (1, 2], so the product of up to `_group_size` of them stays finite and one `log` per
    group replaces `_group_size` `log1p`s. Measured against a float64 reference on
    784-pixel rows, its float32 error equals that of the plain sum of `log1p`s (both
    ~1e-4 nats, the float32 rounding of a ~500-nat sum). A NaN propagates; u = 0 (an
    infinite logit) is a factor 1.
    """
    size = u.shape[-1]
    g = _group_size(size, u.dtype)
    groups = jnp.reshape(1 + u, (*u.shape[:-1], size // g, g))
    return jnp.sum(jnp.log(jnp.prod(groups, axis=-1)), axis=-1)


def bernoulli_row_log_prob(value: Array, logits: Array) -> Array:
    """`sum_d [x_d * l_d - softplus(l_d)]`: the log-likelihood of whole images.

    Equal to `sum(LogitBernoulli(logits).log_prob(value), -1)` to float32 rounding, and
    cheaper. Evaluated (no derivative taken), it spends one `exp(-|l|)` per pixel and one
    `log` per group of pixels (`_sum_log1p`) where the elementwise form spends an `exp`
    and a `log1p` per pixel: 5-8% faster K = 5000 importance-sampled evaluation on a CPU.
    Differentiated, its JVP is the elementwise form whose derivative `x - sigmoid(l)`
    reuses the forward pass's `u = exp(-|l|)` (`sigmoid = where(l >= 0, 1, u) / (1 + u)`);
    there the grouped sum measured 3-8% slower (its reduction materialises one more
    pass over the logits), so it is not used. Measured in benchmarks/README.md, "Issue
    19, session 5". Forward- and reverse-mode both work, Hessians too.

    Args:
      value: data `[*batch, data]` in [0, 1], broadcastable against `logits` (traced
        values outside [0, 1] give -inf, zero mass; NaN gives NaN).
      logits: `[*lead, data]`.

    Returns:
      `[*broadcast(lead, batch)]`.

    Raises:
      ValueError: if `logits` is a scalar, or concrete `value`s lie outside [0, 1]
        (naming `x`, as `bernoulli_likelihood(...).log_prob` does).
    """
    check_rank_at_least(logits, 1, "logits")
    _check_support(value)
    return _row_log_prob(value, logits)


@jax.custom_jvp
def _row_log_prob(value: Array, logits: Array) -> Array:
    """`bernoulli_row_log_prob` without the checks (its custom-JVP core)."""
    u = jnp.exp(-jnp.abs(logits))
    linear = jnp.where(_outside(value), -jnp.inf, value * logits - jnp.maximum(logits, 0))
    return jnp.sum(linear, axis=-1) - _sum_log1p(u)


@functools.partial(_row_log_prob.defjvp, symbolic_zeros=True)
def _bernoulli_row_jvp(
    primals: tuple[Array, Array], tangents: tuple[Array, Array]
) -> tuple[Array, Array]:
    value, logits = primals
    dvalue, dlogits = tangents
    outside = _outside(value)
    softplus, sigmoid = _softplus_and_sigmoid(logits)
    out = jnp.sum(jnp.where(outside, -jnp.inf, value * logits - softplus), axis=-1)
    tangent = jnp.zeros_like(out)
    if not isinstance(dlogits, SymbolicZero):
        tangent = tangent + jnp.sum(jnp.where(outside, 0.0, (value - sigmoid) * dlogits), -1)
    if not isinstance(dvalue, SymbolicZero):
        tangent = tangent + jnp.sum(jnp.where(outside, 0.0, logits * dvalue), -1)
    return out, tangent


class BernoulliImage(distrax.Independent):
    """`Independent(LogitBernoulli(logits), 1)` whose `log_prob` is `bernoulli_row_log_prob`.

    What `bernoulli_likelihood` returns: every other method (sampling, mean, entropy,
    ...) is distrax's; `log_prob` sums over the event with the fused row rule.
    """

    def __init__(self, logits: Array) -> None:
        super().__init__(LogitBernoulli(logits=logits), reinterpreted_batch_ndims=1)

    def log_prob(self, value: Array) -> Array:
        """Log p(value) `[*lead]` of images `value [*batch, data]` (`bernoulli_likelihood`)."""
        return bernoulli_row_log_prob(value, self.distribution.logits)


def bernoulli_likelihood(logits: Array) -> distrax.Independent:
    """p(x | z) = prod_d Bernoulli(x_d; sigmoid(logits_d)).

    `log_prob(x)` is the negative binary cross-entropy
    `x * log sigmoid(l) + (1 - x) * log sigmoid(-l) = x * l - softplus(l)` summed over
    `data` (`bernoulli_row_log_prob`), so float
    inputs in {0, 1} work, and so do grey levels in [0, 1] (the usual, non-normalised,
    cross-entropy objective of the PyTorch VAE example). For grey levels the value is
    minus a cross-entropy, not the log of a probability: it is not a log-likelihood of
    the data and is not comparable with log-likelihoods of binarised data. Values
    outside [0, 1] are outside the support (refused when concrete, -inf when traced).

    Args:
      logits: `[*lead, data]`.

    Returns:
      A `BernoulliImage`: batch `[*lead]`, event `[data]`.
    """
    check_rank_at_least(logits, 1, "logits")
    return BernoulliImage(logits)


def gaussian_likelihood(
    loc: Array, scale: Array | float | None = None, *, log_scale: Array | float | None = None
) -> distrax.Independent:
    """p(x | z) = prod_d N(x_d; loc_d, scale_d^2).

    Give exactly one of `scale` and `log_scale`, broadcastable to `loc` (a scalar, a
    per-dimension `[data]` or a full `[*lead, data]` array).

    Args:
      loc: means `[*lead, data]`.
      scale: standard deviations > 0.
      log_scale: log standard deviations (finite).

    Returns:
      Distribution with batch `[*lead]`, event `[data]`.
    """
    check_rank_at_least(loc, 1, "loc")
    if (scale is None) == (log_scale is None):
        raise ValueError("Give exactly one of `scale` and `log_scale`.")
    if scale is None:
        scale = jnp.exp(jnp.asarray(log_scale, dtype=jnp.result_type(loc)))
    else:
        scale = jnp.asarray(scale, dtype=jnp.result_type(loc))
        if is_concrete(scale) and not bool(jnp.all(scale > 0)):
            raise ValueError("`scale` must be > 0 everywhere.")
    if jnp.ndim(scale) > jnp.ndim(loc):
        raise ValueError(
            f"`scale` of shape {jnp.shape(scale)} must broadcast to `loc` of shape "
            f"{jnp.shape(loc)}."
        )
    scale = jnp.broadcast_to(scale, jnp.shape(loc))
    return distrax.Independent(distrax.Normal(loc, scale), reinterpreted_batch_ndims=1)


def _data_dim_of(net: nnx.Module, data_dim: int | None) -> int | None:
    out = getattr(net, "out_features", None)
    if data_dim is None:
        return out
    data_dim = check_width(data_dim, "data_dim")
    if out is not None and out != data_dim:
        raise ValueError(f"`data_dim` = {data_dim} but `net` outputs {out} features.")
    return data_dim


class BernoulliDecoder(nnx.Module):
    """z -> p(x | z) = Bernoulli(logits = net(z)), for binary (or [0, 1]) data.

    Attributes:
      net: module `[*lead, latent] -> [*lead, data]` (logits).
      data_dim: width of x (from `net.out_features` when it has one).
    """

    def __init__(self, net: nnx.Module, *, data_dim: int | None = None) -> None:
        """Wraps `net`, whose outputs are the logits."""
        if not isinstance(net, nnx.Module):
            raise TypeError(f"`net` must be an nnx.Module, got {type(net).__name__}.")
        self.data_dim = _data_dim_of(net, data_dim)
        self.latent_dim = getattr(net, "in_features", None)
        self.net = net

    def __call__(self, z: Array) -> distrax.Independent:
        """p(x | z): batch `[*lead]`, event `[data]`, for z `[*lead, latent]`."""
        return bernoulli_likelihood(self.net(z))


class GaussianDecoder(nnx.Module):
    """z -> p(x | z) = N(net(z), diag(scale^2)), for real-valued data.

    The scale is one per data dimension, shared across data points: learned
    (`softplus(raw) + min_scale`, initialised at `init_scale`) or fixed at `init_scale`.

    Attributes:
      net: module `[*lead, latent] -> [*lead, data]` (means).
      data_dim: width of x.
      learn_scale: whether the scale is a parameter.
    """

    def __init__(
        self,
        net: nnx.Module,
        *,
        data_dim: int | None = None,
        learn_scale: bool = True,
        init_scale: float = 1.0,
        min_scale: float = DEFAULT_MIN_OBS_SCALE,
    ) -> None:
        """Wraps `net`.

        Args:
          net: module whose outputs are the means `[*lead, data]`.
          data_dim: width of x; needed only if `net` has no `out_features`.
          learn_scale: learn the per-dimension scale (True) or keep it fixed.
          init_scale: initial (or fixed) scale > min_scale.
          min_scale: floor > 0 of a learned scale.
        """
        if not isinstance(net, nnx.Module):
            raise TypeError(f"`net` must be an nnx.Module, got {type(net).__name__}.")
        data_dim = _data_dim_of(net, data_dim)
        if data_dim is None:
            raise ValueError("`data_dim` is required when `net` has no `out_features`.")
        self.data_dim = data_dim
        self.latent_dim = getattr(net, "in_features", None)
        self.net = net
        self.learn_scale = bool(learn_scale)
        init_scale = check_positive_float(init_scale, "init_scale")
        self.min_scale = check_positive_float(min_scale, "min_scale")
        if self.learn_scale:
            raw = inverse_softplus_scale(init_scale, self.min_scale)
            self.raw_scale = nnx.Param(jnp.full((data_dim,), raw, dtype=jnp.float32))
        else:
            self.fixed_scale = init_scale

    def scale(self) -> Array:
        """The observation standard deviations `[data]`."""
        if self.learn_scale:
            return softplus_scale(self.raw_scale[...], self.min_scale)
        return jnp.full((self.data_dim,), self.fixed_scale)

    def __call__(self, z: Array) -> distrax.Independent:
        """p(x | z): batch `[*lead]`, event `[data]`, for z `[*lead, latent]`."""
        loc = self.net(z)
        return gaussian_likelihood(loc, self.scale().astype(loc.dtype))
