"""Control variates for Monte Carlo gradients of E_q[f(z)], for every estimator.

For a control variate h with a closed-form, differentiable E_q[h],

    grad E_q[f] = [grad E_q[f - c h]]_{h held} + c grad E_q[h],

where the bracket is any unbiased gradient estimator (score function, pathwise,
measure-valued) applied to f - c h with h's own parameters held constant. This module
provides:

- `ControlVariate(function, expectation)`: h and q -> E_q[h].
- `control_delta(f)`: the second-order Taylor expansion of f around the mean of q (the
  "delta method", Paisley et al. 2012), whose Gaussian expectation is
  f(mu) + tr(H Sigma) / 2. Without `q` it is re-expanded at each q it is applied to, like
  optax's `control_delta_method(f)`, which took the parameters on every call.
  `control_delta(f, q)` is fixed at that q and refuses any other.
- `with_control_variate`: the score-function estimator as a scalar surrogate (value =
  Monte Carlo mean of f, gradient = the estimator), one coefficient `beta`.
- `control_variates_jacobians` / `estimate_control_variate_coefficients`: per-sample
  Jacobians `[num_samples, *param_shape]` of any estimator in `vi_jax.estimators.jacobians`
  with a control variate, one coefficient per parameter (optax's
  `control_variates_jacobians` and `estimate_control_variate_coefficients`).
- A `MovingAverage` baseline (see `vi_jax.estimators.baselines`) is accepted wherever a
  control variate is (as the constant h = b, optax's `moving_avg_baseline`) and wherever
  a `baseline=` is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp

from vi_jax._validation import check_callable, check_positive_float, check_positive_int
from vi_jax.estimators.baselines import (
    MovingAverage,
    baseline_value,
    moving_average_baseline,
    moving_average_init,
)
from vi_jax.types import Array, PyTree

sg = jax.lax.stop_gradient

__all__ = [
    "ControlVariate",
    "MovingAverage",
    "control_delta",
    "control_variates_jacobians",
    "estimate_control_variate_coefficients",
    "moving_average_baseline",
    "moving_average_init",
    "score_function_control_delta",
    "with_control_variate",
]


class ControlVariate(NamedTuple):
    """A control variate h and its expectation.

    Attributes:
      function: `h: z [D] -> scalar` (its parameters held constant).
      expectation: `q -> E_q[h]` (scalar), differentiable in q's parameters.
      built_for: the q this h was built for, or None if h does not depend on q. A
        variate built for one q refuses to be used with another (it would silently be
        expanded at a stale point).
    """

    function: Callable[[Array], Array]
    expectation: Callable[[distrax.Distribution], Array]
    built_for: distrax.Distribution | None = None


ControlVariateLike = (
    ControlVariate | Callable[[distrax.Distribution], ControlVariate] | MovingAverage
)
"""A `ControlVariate`, a function `q -> ControlVariate` (built afresh at each q, e.g.
`control_delta(f)`), or a `MovingAverage` (the constant h = its value)."""


def _delta_at(function: Callable[[Array], Array], q: distrax.Distribution) -> ControlVariate:
    mu0 = sg(q.mean())
    if mu0.ndim != 1:
        raise ValueError(
            f"`control_delta` needs q with event [D] and no batch, got mean shape {mu0.shape}."
        )
    f0, g0, h0 = sg(function(mu0)), sg(jax.grad(function)(mu0)), sg(jax.hessian(function)(mu0))

    def h(z: Array) -> Array:
        dz = z - mu0
        return f0 + dz @ g0 + 0.5 * dz @ h0 @ dz

    def expectation(dist: distrax.Distribution) -> Array:
        # Exact for any q with this mean and covariance; the (mu - mu0) terms vanish in
        # value at q but carry the gradient w.r.t. the mean.
        dm = dist.mean() - mu0
        return f0 + dm @ g0 + 0.5 * (dm @ h0 @ dm + jnp.sum(h0 * dist.covariance()))

    return ControlVariate(h, expectation, q)


def control_delta(
    function: Callable[[Array], Array], q: distrax.Distribution | None = None
) -> ControlVariate | Callable[[distrax.Distribution], ControlVariate]:
    """Second-order Taylor control variate of f around mu0 = stop_gradient(mean of q).

    h(z) = f(mu0) + g^T (z - mu0) + (z - mu0)^T H (z - mu0) / 2 with g, H the gradient
    and Hessian of f at mu0 (held constant); for q with mean mu and covariance S,
    E_q[h] = f(mu0) + g^T (mu - mu0) + ((mu - mu0)^T H (mu - mu0) + tr(H S)) / 2.

    Args:
      function: twice-differentiable `f: z [D] -> scalar`.
      q: Gaussian-like distribution with `mean()` and `covariance()`, event `[D]`, no
        batch; or None (the default).

    Returns:
      With `q`: a `ControlVariate` expanded at q's mean, refused by the estimators for
      any other q. Without: a function `q -> ControlVariate` that every estimator here
      applies to the current q (the form to build once and use in a training loop).
    """
    check_callable(function, "function")
    if q is None:
        return lambda dist: _delta_at(function, dist)
    return _delta_at(function, q)


def _constant(value: Array) -> ControlVariate:
    return ControlVariate(lambda z: value + 0.0 * jnp.sum(z), lambda dist: value)


def _control_variate_at(control_variate: ControlVariateLike, q: distrax.Distribution):
    """The control variate to use with this q, refusing one built for another q."""
    if isinstance(control_variate, MovingAverage):
        value = control_variate.value()
        if value.ndim != 0:
            raise ValueError(
                "A `MovingAverage` used as `control_variate` must be scalar, got shape "
                f"{value.shape}."
            )
        return _constant(value)
    if isinstance(control_variate, ControlVariate):
        if control_variate.built_for is not None and control_variate.built_for is not q:
            raise ValueError(
                "`control_variate` was built for a different q (its expansion point would "
                "be stale). Build it from this q, or pass `control_delta(f)` without q, "
                "which is re-expanded at the current q on every call."
            )
        return control_variate
    if callable(control_variate):
        built = control_variate(q)
        if not isinstance(built, ControlVariate):
            raise TypeError(
                "`control_variate` called with q must return a ControlVariate, got "
                f"{type(built).__name__}."
            )
        return built
    raise TypeError(
        "`control_variate` must be a ControlVariate, a function q -> ControlVariate or a "
        f"MovingAverage, got {type(control_variate).__name__}."
    )


def with_control_variate(
    key: Array,
    function: Callable[[Array], Array],
    q: distrax.Distribution,
    num_samples: int,
    *,
    control_variate: ControlVariateLike | None = None,
    beta: float | Array = 1.0,
    baseline: MovingAverage | float | Array | None = None,
) -> Array:
    """Score-function surrogate for E_q[f] with an optional control variate and baseline.

    Requires only log q differentiable in its parameters (f may be a black box). For the
    pathwise or measure-valued estimators, or one coefficient per parameter, use
    `control_variates_jacobians`.

    Args:
      key: PRNG key.
      function: `f: z [D] -> scalar`.
      q: distrax distribution, event `[D]`, no batch.
      num_samples: K >= 1 (static).
      control_variate: a `ControlVariate` built for this q, `control_delta(f)` (built at
        this q), a `MovingAverage`, or None.
      beta: control-variate coefficient (held constant).
      baseline: constant baseline b (held constant): a number or a `MovingAverage`
        (its `value()`).

    Returns:
      Scalar surrogate: value = (1/K) sum_k f(z_k); gradient w.r.t. q's parameters =
      (1/K) sum_k (f(z_k) - b - beta h(z_k)) grad log q(z_k) + beta grad E_q[h].
    """
    check_callable(function, "function")
    num_samples = check_positive_int(num_samples, "num_samples")
    z = sg(q.sample(seed=key, sample_shape=(num_samples,)))
    f = jax.vmap(function)(z)
    log_q = q.log_prob(z)
    signal = f - baseline_value(baseline)
    extra = 0.0
    if control_variate is not None:
        cv = _control_variate_at(control_variate, q)
        signal = signal - beta * jax.vmap(cv.function)(z)
        expected = cv.expectation(q)
        extra = beta * (expected - sg(expected))
    return jnp.mean(sg(f)) + jnp.mean(sg(signal) * (log_q - sg(log_q))) + extra


def score_function_control_delta(
    key: Array,
    function: Callable[[Array], Array],
    q: distrax.Distribution,
    num_samples: int,
    *,
    beta: float | Array = 1.0,
    baseline: MovingAverage | float | Array | None = None,
) -> Array:
    """`with_control_variate` with the control-delta (Taylor) variate of f at q's mean."""
    return with_control_variate(
        key,
        function,
        q,
        num_samples,
        control_variate=control_delta(function),
        beta=beta,
        baseline=baseline,
    )


# ------------------------------------------------------- per-sample Jacobians with CVs

GradEstimator = Callable[..., PyTree]
"""`grad_estimator(key, function, params, dist_builder, num_samples) -> Jacobians`, each
leaf `[num_samples, *leaf.shape]` (see `vi_jax.estimators.jacobians`)."""


def estimate_control_variate_coefficients(
    key: Array,
    function: Callable[[Array], Array],
    control_variate: ControlVariateLike,
    grad_estimator: GradEstimator,
    params: PyTree,
    dist_builder: Callable[[PyTree], distrax.Distribution],
    num_samples: int = 20,
    *,
    eps: float = 1e-3,
) -> PyTree:
    """Variance-minimising control-variate coefficient, one per parameter leaf.

    For leaf theta with per-sample Jacobians J_f (of f) and J_h (of h) on the same draws,
    c = sum_i cov(J_f[:, i], J_h[:, i]) / (sum_i var(J_h[:, i]) + eps), summed over the
    leaf's elements i (optax's `estimate_control_variate_coefficients`). Use a key
    independent of the one the coefficients are then used with, or the estimate is biased
    (optax used `jax.random.split(rng)[0]` of its own key internally).

    Args:
      key: PRNG key.
      function: `f: z [D] -> scalar`.
      control_variate: see `ControlVariateLike`.
      grad_estimator: e.g. `score_function_jacobians`, `pathwise_jacobians`,
        `measure_valued_param_jacobians`.
      params: pytree of q's parameters.
      dist_builder: `params -> q` (distrax, event `[D]`, no batch).
      num_samples: draws for the estimate (static; 20 as in optax).
      eps: added to the variance.

    Returns:
      A pytree like `params` with a scalar coefficient (no gradient) per leaf.
    """
    check_callable(function, "function")
    num_samples = check_positive_int(num_samples, "num_samples")
    eps = check_positive_float(eps, "eps", allow_zero=True)
    cv = _control_variate_at(control_variate, dist_builder(sg(params)))
    j_h = grad_estimator(key, cv.function, params, dist_builder, num_samples)
    j_f = grad_estimator(key, function, params, dist_builder, num_samples)

    def coefficient(jh: Array, jf: Array) -> Array:
        jh, jf = jh.reshape(num_samples, -1), jf.reshape(num_samples, -1)
        cov = jnp.mean((jf - jf.mean(0)) * (jh - jh.mean(0)), axis=0)
        return sg(jnp.sum(cov) / (jnp.sum(jnp.var(jh, axis=0)) + eps))

    return jax.tree.map(coefficient, j_h, j_f)


def control_variates_jacobians(
    key: Array,
    function: Callable[[Array], Array],
    control_variate: ControlVariateLike,
    grad_estimator: GradEstimator,
    params: PyTree,
    dist_builder: Callable[[PyTree], distrax.Distribution],
    num_samples: int,
    *,
    coefficients: float | PyTree | str = 1.0,
    coefficient_num_samples: int = 20,
    eps: float = 1e-3,
) -> PyTree:
    """Per-sample Jacobians of E_q[f] w.r.t. q's parameters, with a control variate.

    Per sample k and leaf theta with coefficient c:
    J_f[k] - c (J_h[k] - grad_theta E_q[h]), J_f and J_h from `grad_estimator` on the same
    draws, h's own parameters held constant (so the Taylor variate's expansion point is
    not differentiated: its gradient terms cancel in expectation, and every row is an
    unbiased single-sample estimate; optax added the mean of grad_theta h instead, with
    the same mean). Works with any of the estimators in `vi_jax.estimators.jacobians`.

    Args:
      key: PRNG key.
      function: `f: z [D] -> scalar`.
      control_variate: see `ControlVariateLike` (e.g. `control_delta(f)`, a
        `MovingAverage`).
      grad_estimator: `(key, function, params, dist_builder, num_samples) -> Jacobians`.
      params: pytree of q's parameters.
      dist_builder: `params -> q` (distrax, event `[D]`, no batch).
      num_samples: K >= 1 (static).
      coefficients: one number for all leaves, a pytree like `params` of scalars, or
        "estimate": `estimate_control_variate_coefficients` on an independent key
        (`jax.random.split(key)`) with `coefficient_num_samples` draws.
      coefficient_num_samples: draws for the coefficient estimate (static).
      eps: passed to the coefficient estimate.

    Returns:
      A pytree like `params`, each leaf `[K, *leaf.shape]`; its mean over axis 0 is the
      gradient estimate, its spread the estimator's variance.
    """
    check_callable(function, "function")
    check_callable(grad_estimator, "grad_estimator")
    check_callable(dist_builder, "dist_builder")
    num_samples = check_positive_int(num_samples, "num_samples")
    if isinstance(coefficients, str):
        if coefficients != "estimate":
            raise ValueError(
                f'`coefficients` must be a number, a pytree or "estimate", got {coefficients!r}.'
            )
        key, k_coef = jax.random.split(key)
        coefficients = estimate_control_variate_coefficients(
            k_coef,
            function,
            control_variate,
            grad_estimator,
            params,
            dist_builder,
            coefficient_num_samples,
            eps=eps,
        )
    elif jax.tree.structure(coefficients) != jax.tree.structure(params):  # type: ignore[operator]
        if jax.tree.structure(coefficients).num_leaves != 1 or jnp.ndim(coefficients) != 0:
            raise ValueError(
                "`coefficients` must be a scalar or a pytree like `params` of scalars, got "
                f"{jax.tree.structure(coefficients)}."
            )
        coefficients = jax.tree.map(lambda _: coefficients, params)
    cv = _control_variate_at(control_variate, dist_builder(sg(params)))
    j_f = grad_estimator(key, function, params, dist_builder, num_samples)
    j_h = grad_estimator(key, cv.function, params, dist_builder, num_samples)
    expected_grad = jax.grad(lambda p: cv.expectation(dist_builder(p)))(params)
    return jax.tree.map(
        lambda jf, jh, ge, c: jf - sg(c) * (jh - ge), j_f, j_h, expected_grad, coefficients
    )
