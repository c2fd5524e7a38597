"""Plain Monte Carlo: E_p[f(z)] ~ (1/n) sum_i f(z_i), z_i ~ p, with its standard error.

The lecture's first estimator. Throwing darts at the unit square estimates pi:

    >>> import distrax, jax, jax.numpy as jnp
    >>> square = distrax.Independent(distrax.Uniform(jnp.zeros(2), jnp.ones(2)), 1)
    >>> in_circle = lambda u: 4.0 * (jnp.sum(u**2, axis=-1) <= 1.0)
    >>> est = mc_expectation(jax.random.key(0), in_circle, square, 100_000)
    >>> bool(abs(est.mean - jnp.pi) < 4 * est.stderr)
    True

The standard error std(f) / sqrt(n) shrinks as 1/sqrt(n): four times the darts halve it.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import NamedTuple, TypeAlias

import distrax
import jax
import jax.numpy as jnp

from vi_jax._validation import (
    check_callable,
    check_finite,
    check_not_nan,
    check_positive_int,
    check_rank_at_least,
)
from vi_jax.types import Array

Sampler: TypeAlias = distrax.Distribution | Callable[[Array, int], Array]

_DISTRIBUTION_TYPES = typing.get_args(distrax.DistributionLike)


class MCEstimate(NamedTuple):
    """A Monte Carlo estimate of an expectation and its standard error.

    Attributes:
      mean: the sample mean, `[*value_shape]` (`[R, *value_shape]` with repetitions).
      stderr: the estimated standard error std(f, ddof=1) / sqrt(n), same shape; +inf
        when n = 1 (a single sample says nothing about its spread).
    """

    mean: Array
    stderr: Array


def _mean_and_stderr(values: Array) -> MCEstimate:
    n = values.shape[0]
    mean = jnp.mean(values, axis=0)
    if n == 1:
        return MCEstimate(mean, jnp.full_like(mean, jnp.inf))
    # Two-pass (centred) variance: no cancellation when the mean is large.
    var = jnp.sum((values - mean) ** 2, axis=0) / (n - 1)
    return MCEstimate(mean, jnp.sqrt(var / n))


def mc_mean_and_stderr(values: Array, axis: int = 0) -> MCEstimate:
    """The Monte Carlo mean of samples you already have, with its standard error.

    Args:
      values: samples f(z_i) with the sample axis at `axis`, e.g. `[n, *value_shape]`.
        Must be finite.
      axis: the sample axis (static int).

    Returns:
      `MCEstimate(mean, stderr)`, each of the input's shape without `axis`; stderr is
      std(values, ddof=1) / sqrt(n), +inf when n = 1.
    """
    check_rank_at_least(values, 1, "values")
    values = jnp.asarray(values)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"`axis` must be an int, got {type(axis).__name__}.")
    if not -values.ndim <= axis < values.ndim:
        raise ValueError(f"`axis`={axis} is out of range for `values` of rank {values.ndim}.")
    if values.shape[axis] < 1:
        raise ValueError(f"`values` has no samples along axis {axis} (shape {values.shape}).")
    if not jnp.issubdtype(values.dtype, jnp.inexact):
        values = values.astype(jnp.zeros(()).dtype)
    check_finite(values, "values")
    return _mean_and_stderr(jnp.moveaxis(values, axis, 0))


def _draw(key: Array, sampler: Sampler, num_samples: int) -> Array:
    if isinstance(sampler, _DISTRIBUTION_TYPES):
        return sampler.sample(seed=key, sample_shape=(num_samples,))
    samples = sampler(key, num_samples)
    if jnp.ndim(samples) < 1 or jnp.shape(samples)[0] != num_samples:
        raise ValueError(
            f"`sampler(key, n)` must return samples of shape [n, ...] = [{num_samples}, ...], "
            f"got {jnp.shape(samples)}."
        )
    return samples


def mc_expectation(
    key: Array,
    f: Callable[[Array], Array],
    sampler: Sampler,
    num_samples: int,
    *,
    num_repeats: int | None = None,
) -> MCEstimate:
    """Monte Carlo estimate of E_p[f(z)] with its standard error.

    Draws z_1..z_n ~ p and returns the mean of f(z_i) and std(f, ddof=1) / sqrt(n).
    The mean is unbiased for E_p[f] whenever f(z) is integrable; the standard error is
    meaningful when f(z) has finite variance. For a reparameterised p (e.g. a Gaussian
    with traced parameters) `jax.grad` of the mean is the pathwise gradient estimate.

    Example (pi by darts; see the module docstring):
      `4 * mc_expectation(key, lambda u: jnp.sum(u**2, -1) <= 1, square, n).mean`.

    Args:
      key: PRNG key.
      f: vectorised function, samples `[n, *event]` -> values `[n, *value_shape]`.
      sampler: a distrax distribution p (sampled with `p.sample(seed, (n,))`), or a
        function `sampler(key, n) -> samples [n, *event]`.
      num_samples: n >= 1, static.
      num_repeats: if given, R >= 1 independent repetitions (static), computed with
        `jax.vmap` over split keys.

    Returns:
      `MCEstimate(mean, stderr)`, each `[*value_shape]`, or `[R, *value_shape]` with
      `num_repeats=R`.
    """
    check_callable(f, "f")
    if isinstance(sampler, _DISTRIBUTION_TYPES):
        for leaf in jax.tree_util.tree_leaves(sampler):  # its parameters (concrete ones)
            if hasattr(leaf, "dtype"):
                check_not_nan(leaf, "sampler (a parameter)")
    else:
        check_callable(sampler, "sampler")
    num_samples = check_positive_int(num_samples, "num_samples")
    if num_repeats is not None:
        num_repeats = check_positive_int(num_repeats, "num_repeats")

    def one(k: Array) -> MCEstimate:
        z = _draw(k, sampler, num_samples)
        values = f(z)
        if jnp.ndim(values) < 1 or jnp.shape(values)[0] != num_samples:
            raise ValueError(
                f"`f` must map samples [n, ...] to values [n, ...] with n = {num_samples}, "
                f"got values of shape {jnp.shape(values)}."
            )
        values = jnp.asarray(values)
        if not jnp.issubdtype(values.dtype, jnp.inexact):
            # Indicators and counts: average them in floating point.
            values = values.astype(jnp.zeros(()).dtype)
        return _mean_and_stderr(values)

    if num_repeats is None:
        return one(key)
    return jax.vmap(one)(jax.random.split(key, num_repeats))
