"""Per-sample Jacobians of E_q[f(z)] w.r.t. q's parameters (optax.monte_carlo's API).

Each function takes `(key, function, params, dist_builder, num_samples)` with
`dist_builder(params) -> q` (a distrax distribution, event `[D]`, no batch) and
`function: z [D] -> scalar`, and returns a pytree like `params` whose leaves have shape
`[num_samples, *leaf.shape]`: row k is the single-sample estimate of grad E_q[f] from draw
k. The mean over axis 0 is the gradient estimate; the spread measures the estimator's
variance directly (no vmapping over keys). f has no parameters of its own here; if it
does, hold them with stop_gradient and apply the chain rule outside.

- `score_function_jacobians`: (f(z_k) - b) grad log q(z_k); any q with a differentiable
  log-density, discrete included; f may be a black box; optional baseline b.
- `pathwise_jacobians`: grad f(z_k(params)) through a reparameterised sample.
- `measure_valued_param_jacobians`: the measure-valued estimator of a diagonal
  Gaussian (`vi_jax.estimators.measure_valued`), chain-ruled to `params`, so a
  (loc, log_scale) builder gets log-scale gradients as optax's did.

These replace optax's removed `score_function_jacobians`, `pathwise_jacobians` and
`measure_valued_jacobians`; `diag_normal_log_scale` is optax's `utils.multi_normal`
(whose builder unpacked the parameter list: here it takes the pytree as one argument).
Control variates for all three: `vi_jax.estimators.control_variates`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import distrax
import jax
import jax.numpy as jnp

from vi_jax._validation import check_callable, check_positive_int
from vi_jax.estimators import _common
from vi_jax.estimators.baselines import MovingAverage, baseline_value
from vi_jax.estimators.measure_valued import measure_valued_jacobians
from vi_jax.types import Array, PyTree

DistBuilder = Callable[[PyTree], distrax.Distribution]
sg = jax.lax.stop_gradient


def diag_normal_log_scale(params: Sequence[Array]) -> distrax.MultivariateNormalDiag:
    """N(loc, diag(exp(log_scale)^2)) from `params = (loc [D], log_scale [D])`."""
    loc, log_scale = params
    return distrax.MultivariateNormalDiag(loc, jnp.exp(log_scale))


def _check(function: Callable, dist_builder: DistBuilder, num_samples: int) -> int:
    check_callable(function, "function")
    check_callable(dist_builder, "dist_builder")
    return check_positive_int(num_samples, "num_samples")


def _scalar_f(function: Callable[[Array], Array], z: Array) -> Array:
    f = jax.vmap(function)(z)
    if f.shape != z.shape[:1]:
        raise ValueError(
            f"`function` must map one sample z {z.shape[1:]} to a scalar, got shape {f.shape[1:]}."
        )
    return f


def score_function_jacobians(
    key: Array,
    function: Callable[[Array], Array],
    params: PyTree,
    dist_builder: DistBuilder,
    num_samples: int,
    *,
    baseline: MovingAverage | float | Array | None = None,
) -> PyTree:
    """Per-sample score-function estimates (f(z_k) - b) grad_params log q(z_k).

    Args:
      key: PRNG key.
      function: `f: z [D] -> scalar` (black box; no gradient is taken).
      params: pytree of q's parameters.
      dist_builder: `params -> q`.
      num_samples: K >= 1 (static).
      baseline: b: None (0), a number or a scalar `MovingAverage` (its `value()`).

    Returns:
      Pytree like `params`, leaves `[K, *leaf.shape]`.
    """
    num_samples = _check(function, dist_builder, num_samples)
    z = sg(dist_builder(params).sample(seed=key, sample_shape=(num_samples,)))
    signal = sg(_scalar_f(function, z)) - baseline_value(baseline)

    # One reverse pass per sample, vectorised: memory O(K * (D + #params)), where forward
    # mode (optax's jacfwd) holds #params copies of every [K, D] intermediate.
    def one(z_k: Array, signal_k: Array) -> PyTree:
        return jax.grad(lambda p: signal_k * dist_builder(p).log_prob(z_k))(params)

    return jax.vmap(one)(z, signal)


def pathwise_jacobians(
    key: Array,
    function: Callable[[Array], Array],
    params: PyTree,
    dist_builder: DistBuilder,
    num_samples: int,
) -> PyTree:
    """Per-sample pathwise (reparameterisation) estimates grad_params f(z_k(params)).

    Args:
      key: PRNG key.
      function: differentiable `f: z [D] -> scalar`.
      params: pytree of q's parameters.
      dist_builder: `params -> q`, with a reparameterised sampler.
      num_samples: K >= 1 (static).

    Returns:
      Pytree like `params`, leaves `[K, *leaf.shape]`.
    """
    num_samples = _check(function, dist_builder, num_samples)
    _common.require_reparameterized(dist_builder(sg(params)), "pathwise_jacobians")

    def per_sample(p: PyTree) -> Array:
        return _scalar_f(function, dist_builder(p).sample(seed=key, sample_shape=(num_samples,)))

    return jax.jacfwd(per_sample)(params)


def measure_valued_param_jacobians(
    key: Array,
    function: Callable[[Array], Array],
    params: PyTree,
    dist_builder: DistBuilder,
    num_samples: int,
    *,
    coupling: bool = True,
) -> PyTree:
    """Per-sample measure-valued estimates for a diagonal Gaussian q, w.r.t. `params`.

    `measure_valued_jacobians` gives per-sample gradients w.r.t. q's loc and scale; the
    chain rule through `dist_builder` carries them to `params` (with
    `diag_normal_log_scale` that multiplies the scale rows by the scale: optax's
    log-scale gradients). f need not be differentiable.

    Args:
      key: PRNG key.
      function: `f: z [D] -> scalar`.
      params: pytree of q's parameters.
      dist_builder: `params -> distrax.MultivariateNormalDiag` (event `[D]`, no batch).
      num_samples: K >= 1 (static).
      coupling: share randomness between the positive and negative parts.

    Returns:
      Pytree like `params`, leaves `[K, *leaf.shape]`.
    """
    num_samples = _check(function, dist_builder, num_samples)
    q = dist_builder(sg(params))
    if not isinstance(q, distrax.MultivariateNormalDiag):
        raise ValueError(
            "`dist_builder` must build a distrax.MultivariateNormalDiag for the "
            f"measure-valued estimator, got {type(q).__name__}."
        )

    def loc_scale(p: PyTree) -> tuple[Array, Array]:
        dist = dist_builder(p)
        return dist.loc, dist.scale_diag

    (loc, scale), vjp = jax.vjp(loc_scale, params)
    g_loc, g_scale = measure_valued_jacobians(
        key, function, sg(loc), sg(scale), num_samples, coupling=coupling
    )
    return jax.vmap(lambda gl, gs: vjp((gl, gs))[0])(g_loc, g_scale)
