"""Control variates for the score-function estimator of grad_phi E_q[f(z)].

The score-function (REINFORCE) estimator (f(z) - b) grad log q(z) is unbiased for any
constant baseline b; subtracting a control variate h with known E_q[h] keeps it
unbiased:

    grad E_q[f] = E_q[(f(z) - b - beta h(z)) grad log q(z)] + beta grad E_q[h].

`with_control_variate` builds that estimator as a scalar surrogate (value = the Monte
Carlo estimate of E_q[f], gradient = the estimator) for any h with a closed-form,
differentiable expectation; `control_delta` provides the second-order Taylor expansion
of f around the mean of q (the "delta method" control variate, Paisley et al. 2012),
whose expectation under a Gaussian is f(mu) + tr(H Sigma) / 2. `moving_average_baseline`
updates a scalar baseline b across steps. These replace optax's removed
`control_delta_method`, `moving_avg_baseline` and `control_variates_jacobians`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp

from vi_jax._validation import check_callable, check_positive_int
from vi_jax.types import Array

sg = jax.lax.stop_gradient


class ControlVariate(NamedTuple):
    """A control variate h and its expectation.

    Attributes:
      function: `h: z [D] -> scalar`.
      expectation: `q -> E_q[h]` (scalar), differentiable in q's parameters.
    """

    function: Callable[[Array], Array]
    expectation: Callable[[distrax.Distribution], Array]


def control_delta(function: Callable[[Array], Array], q: distrax.Distribution) -> ControlVariate:
    """Second-order Taylor control variate of f around mu0 = stop_gradient(mean of q).

    h(z) = f(mu0) + g^T (z - mu0) + (z - mu0)^T H (z - mu0) / 2 with g, H the gradient
    and Hessian of f at mu0 (held constant); for q with mean mu and covariance S,
    E_q[h] = f(mu0) + g^T (mu - mu0) + ((mu - mu0)^T H (mu - mu0) + tr(H S)) / 2.

    Args:
      function: twice-differentiable `f: z [D] -> scalar`.
      q: Gaussian-like distribution with `mean()` and `covariance()`, event `[D]`,
        no batch.

    Returns:
      A `ControlVariate`.
    """
    check_callable(function, "function")
    mu0 = sg(q.mean())
    f0, g0, h0 = sg(function(mu0)), sg(jax.grad(function)(mu0)), sg(jax.hessian(function)(mu0))

    def h(z: Array) -> Array:
        dz = z - mu0
        return f0 + dz @ g0 + 0.5 * dz @ h0 @ dz

    def expectation(dist: distrax.Distribution) -> Array:
        dm = dist.mean() - mu0
        return f0 + dm @ g0 + 0.5 * (dm @ h0 @ dm + jnp.sum(h0 * dist.covariance()))

    return ControlVariate(h, expectation)


def with_control_variate(
    key: Array,
    function: Callable[[Array], Array],
    q: distrax.Distribution,
    num_samples: int,
    *,
    control_variate: ControlVariate | None = None,
    beta: float | Array = 1.0,
    baseline: float | Array = 0.0,
) -> Array:
    """Score-function surrogate for E_q[f] with an optional control variate and baseline.

    Requires only log q differentiable in its parameters (f may be a black box).

    Args:
      key: PRNG key.
      function: `f: z [D] -> scalar`.
      q: distrax distribution, event `[D]`, no batch.
      num_samples: K >= 1 (static).
      control_variate: `ControlVariate` h (e.g. `control_delta(f, q)`), or None.
      beta: control-variate coefficient (held constant).
      baseline: constant baseline b (held constant), e.g. a moving average.

    Returns:
      Scalar surrogate: value = (1/K) sum_k f(z_k); gradient w.r.t. q's parameters =
      (1/K) sum_k (f(z_k) - b - beta h(z_k)) grad log q(z_k) + beta grad E_q[h].
    """
    check_callable(function, "function")
    num_samples = check_positive_int(num_samples, "num_samples")
    z = sg(q.sample(seed=key, sample_shape=(num_samples,)))
    f = jax.vmap(function)(z)
    log_q = q.log_prob(z)
    signal = f - baseline
    extra = 0.0
    if control_variate is not None:
        signal = signal - beta * jax.vmap(control_variate.function)(z)
        expected = control_variate.expectation(q)
        extra = beta * (expected - sg(expected))
    return jnp.mean(sg(f)) + jnp.mean(sg(signal) * (log_q - sg(log_q))) + extra


def score_function_control_delta(
    key: Array,
    function: Callable[[Array], Array],
    q: distrax.Distribution,
    num_samples: int,
    *,
    beta: float | Array = 1.0,
    baseline: float | Array = 0.0,
) -> Array:
    """`with_control_variate` with the control-delta (Taylor) variate of f at q's mean."""
    return with_control_variate(
        key,
        function,
        q,
        num_samples,
        control_variate=control_delta(function, q),
        beta=beta,
        baseline=baseline,
    )


class MovingAverage(NamedTuple):
    """State of a zero-debiased exponential moving average (scalar or `[*batch]`)."""

    value: Array
    count: Array


def moving_average_init(shape: tuple[int, ...] = ()) -> MovingAverage:
    """A fresh moving-average state of the given shape."""
    return MovingAverage(jnp.zeros(shape), jnp.zeros((), jnp.int32))


def moving_average_baseline(
    state: MovingAverage, observation: Array, decay: float = 0.99
) -> tuple[Array, MovingAverage]:
    """Updates the average with `observation` (held constant) and returns the baseline.

    Args:
      state: current `MovingAverage`.
      observation: new value(s), e.g. the mean of f over this step's samples.
      decay: in [0, 1).

    Returns:
      `(baseline, new_state)`; the baseline is the zero-debiased average
      value / (1 - decay^count), so the first step's baseline equals the observation.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"`decay` must be in [0, 1), got {decay}.")
    value = decay * state.value + (1.0 - decay) * sg(observation)
    count = state.count + 1
    return value / (1.0 - decay**count), MovingAverage(value, count)
