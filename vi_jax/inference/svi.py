"""Per-datapoint (non-amortised) stochastic variational inference.

Every data point b gets its own free Gaussian q_b(z) = N(loc_b, L_b L_b^T); all B of
them are optimised in parallel by one optax optimiser inside one compiled `lax.scan`.
The shape follows blackjax's `meanfield_vi`: a `SVIState` NamedTuple and pure
`init` / `step` / `sample` functions.

Families:
  - "meanfield": params `{"loc": [B, D], "log_scale": [B, D]}` ->
    `vi_jax.families.MultivariateNormalDiag(loc, exp(log_scale))` (distrax's, with
    faster draws).
  - "fullrank": params `{"loc": [B, D], "raw_tri": [B, D, D]}` ->
    `distrax.MultivariateNormalTri(loc, L)` with L the lower triangle of `raw_tri`
    whose diagonal is `exp(diag(raw_tri))` (strictly positive).

  - a `vi_jax.families.Family` object (e.g. `make_family("iaf", D)`): params
    `{"params": [B, param_size], "net": the family's network weights, each leaf [B, ...]}`
    -> `family.local(params, net)`: every data point gets its own flow (its own copy of
    the weights), so the fit is truly per-datapoint (Cremer et al.'s q* for a flow).

Data points are independent: `log_joint` maps `z [K, B, D] -> [K, B]` with element
`[k, b]` depending on `z[k, b]` only, so the gradient of the *sum* over b of the
surrogates w.r.t. phi_b is the gradient of the b-th bound alone (an implicit vmap over
data that costs one batched evaluation of `log_joint`).

Lecture loop (alternate per-datapoint phi^(i) and model theta), as a recipe:

    def log_joint_of(theta):                      # closes over the batch x
        return lambda z: model_log_joint(theta, x, z)
    params, q, _ = fit_local(k1, log_joint_of(theta), params, family="fullrank",
                             num_samples=1, num_steps=100)     # inner phi steps
    params = jax.lax.stop_gradient(params)
    loss = lambda th: -jnp.mean(elbo_pathwise(k2, log_joint_of(th), make_q(params,
                                "fullrank"), 1))
    theta = optax.apply_updates(theta, theta_opt.update(jax.grad(loss)(theta), ...))

`svi_theta_step` packages exactly this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import optax

from vi_jax._validation import (
    check_callable,
    check_equal_shape,
    check_positive_float,
    check_positive_int,
    check_rank,
)
from vi_jax.estimators.gradients import elbo_pathwise
from vi_jax.families import Family, MultivariateNormalDiag
from vi_jax.types import Array, Estimator, LogJoint

FAMILIES = ("meanfield", "fullrank")


class SVIState(NamedTuple):
    """State of per-datapoint SVI.

    Attributes:
      params: variational parameters (see module docstring), leading axis `[B]`.
      opt_state: the optax optimiser state for `params`.
      step: number of steps taken, int scalar.
    """

    params: dict[str, Array]
    opt_state: Any
    step: Array


def check_family(family: Any) -> str | Family:
    """Returns `family` if it is "meanfield", "fullrank" or a Family; else ValueError."""
    if isinstance(family, Family):
        return family
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(
            f"`family` must be one of {FAMILIES} or a vi_jax.families.Family, got {family!r}."
        )
    return family


def init_from_q(q: distrax.Distribution, family: Family) -> dict[str, Any]:
    """Per-datapoint params of `family` that reproduce the encoder's `q` (batch `[B]`).

    For a flow encoder the weights of q's flow are copied to every data point.
    """
    params = jax.lax.stop_gradient(family.params_of(q))
    if params.ndim != 2:
        raise ValueError(f"`q` must have batch [B] (params [B, P]), got params {params.shape}.")
    net = jax.lax.stop_gradient(family.local_net(params.shape[0], q))
    return {"params": params, "net": net}


def init_params(loc: Array, family: str | Family, scale: Array | None = None) -> dict[str, Array]:
    """Free parameters of B Gaussians with means `loc` and diagonal scales `scale`.

    Args:
      loc: initial means `[B, D]` (e.g. an encoder's output).
      family: "meanfield", "fullrank" or a `vi_jax.families.Family`.
      scale: initial standard deviations `[B, D]` (> 0); defaults to ones.

    Returns:
      Params dict: "meanfield" `{"loc" [B, D], "log_scale" [B, D]}`, "fullrank"
      `{"loc" [B, D], "raw_tri" [B, D, D]}` (diagonal = log scale, off-diagonal 0).
    """
    family = check_family(family)
    loc = jnp.asarray(loc)
    check_rank(loc, 2, "loc", "[batch, latent]")
    if scale is None:
        scale = jnp.ones_like(loc)
    scale = jnp.asarray(scale, loc.dtype)
    check_equal_shape(scale, loc, "scale", "loc")
    if isinstance(family, Family):
        params = family.init_params(loc, scale)
        return {"params": params, "net": family.local_net(loc.shape[0])}
    log_scale = jnp.log(scale)
    if family == "meanfield":
        return {"loc": loc, "log_scale": log_scale}
    return {"loc": loc, "raw_tri": jax.vmap(jnp.diag)(log_scale)}


def scale_tri(params: dict[str, Array], family: str) -> Array:
    """Lower-triangular scale `[B, D, D]` of q (diagonal for "meanfield")."""
    family = check_family(family)
    if isinstance(family, Family):
        raise TypeError("`scale_tri` takes the names 'meanfield' or 'fullrank', not a Family.")
    if family == "meanfield":
        return jax.vmap(jnp.diag)(jnp.exp(params["log_scale"]))
    raw = params["raw_tri"]
    d = raw.shape[-1]
    eye = jnp.eye(d, dtype=raw.dtype)
    # exp on the diagonal keeps L invertible; the strict lower triangle is free.
    return jnp.tril(raw, -1) + eye * jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))[..., None, :]


def make_q(params: dict[str, Any], family: str | Family) -> distrax.Distribution:
    """The variational distribution, batch `[B]`, event `[D]`, for `params`."""
    family = check_family(family)
    if isinstance(family, Family):
        return family.local(params["params"], params["net"])
    if family == "meanfield":
        return MultivariateNormalDiag(params["loc"], jnp.exp(params["log_scale"]))
    return distrax.MultivariateNormalTri(params["loc"], scale_tri(params, family))


def init(
    params_or_loc: Array | dict[str, Array],
    family: str | Family,
    optimizer: optax.GradientTransformation | None = None,
    scale: Array | None = None,
) -> SVIState:
    """Initial `SVIState`.

    Args:
      params_or_loc: a params dict (as from `init_params`) or initial means `[B, D]`.
      family: "meanfield", "fullrank" or a `vi_jax.families.Family`.
      optimizer: optax optimiser (default `optax.adam(1e-2)`).
      scale: initial scales `[B, D]` when `params_or_loc` is a mean.
    """
    family = check_family(family)
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    if isinstance(params_or_loc, dict):
        params = params_or_loc
        if isinstance(family, Family):
            expected = {"params", "net"}
        else:
            expected = {"loc", "log_scale"} if family == "meanfield" else {"loc", "raw_tri"}
        if set(params) != expected:
            raise ValueError(
                f"`params_or_loc` for family {family!r} must have keys {sorted(expected)}, "
                f"got {sorted(params)}."
            )
    else:
        params = init_params(params_or_loc, family, scale)
    return SVIState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def step(
    key: Array,
    state: SVIState,
    log_joint: LogJoint,
    family: str | Family,
    optimizer: optax.GradientTransformation,
    estimator: Estimator = elbo_pathwise,
    num_samples: int = 1,
) -> tuple[SVIState, Array]:
    """One optax step on every data point's phi.

    Args:
      key: PRNG key.
      state: current `SVIState`.
      log_joint: `z [K, B, D] -> log p(x, z) [K, B]`.
      family: "meanfield", "fullrank" or a `vi_jax.families.Family`.
      optimizer: the optax optimiser `state.opt_state` belongs to.
      estimator: `estimator(key, log_joint, q, num_samples) -> [B]` (any of
        `vi_jax.estimators.gradients`).
      num_samples: K >= 1 (static).

    Returns:
      `(new_state, bound)` with `bound [B]` the estimator's value at the old params.
    """

    def loss(params):
        surrogate = estimator(key, log_joint, make_q(params, family), num_samples)
        # Sum, not mean: each phi_b then gets the gradient of its own bound.
        return -jnp.sum(surrogate), surrogate

    grads, bound = jax.grad(loss, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return SVIState(params, opt_state, state.step + 1), jax.lax.stop_gradient(bound)


def sample(key: Array, state: SVIState, family: str | Family, num_samples: int = 1) -> Array:
    """Draws `[num_samples, B, D]` from the current per-datapoint q."""
    num_samples = check_positive_int(num_samples, "num_samples")
    return make_q(state.params, family).sample(seed=key, sample_shape=(num_samples,))


def fit_local(
    key: Array,
    log_joint: LogJoint,
    init_params: dict[str, Array] | Array,
    *,
    family: str | Family,
    optimizer: optax.GradientTransformation | None = None,
    estimator: Estimator = elbo_pathwise,
    num_samples: int = 1,
    num_steps: int,
    init_scale: Array | None = None,
    tol: float | None = None,
    window: int = 50,
) -> tuple[dict[str, Array], distrax.Distribution, Array]:
    """Fits B per-datapoint Gaussians by `num_steps` optax steps in one `lax.scan`.

    Args:
      key: PRNG key.
      log_joint: `z [K, B, D] -> log p(x, z) [K, B]`.
      init_params: a params dict (as from `init_params`) or initial means `[B, D]`.
      family: "meanfield", "fullrank" or a `vi_jax.families.Family`.
      optimizer: optax optimiser, default `optax.adam(1e-2)`.
      estimator: any `estimator(key, log_joint, q, num_samples) -> [B]`.
      num_samples: K >= 1 per step (static).
      num_steps: number of steps >= 1 (static).
      init_scale: initial scales `[B, D]` when `init_params` is a mean.
      tol: if given (> 0), a `lax.while_loop` stops early once the relative change
        `|m_t - m_{t-1}| / |m_{t-1}|` of the batch-averaged bound, averaged over two
        consecutive windows of `window` steps, falls below `tol`; `num_steps` is then
        the maximum.
      window: window length (>= 1) for the convergence test.

    Returns:
      `(params, q, trace)`: final params, the final q (batch `[B]`), and the
      estimator's bound value at each step, `[num_steps, B]` (NaN after an early stop).
    """
    family = check_family(family)
    check_callable(log_joint, "log_joint")
    check_callable(estimator, "estimator")
    num_samples = check_positive_int(num_samples, "num_samples")
    num_steps = check_positive_int(num_steps, "num_steps")
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    window = check_positive_int(window, "window")
    if tol is not None:
        tol = check_positive_float(tol, "tol")
    state = init(init_params, family, optimizer, init_scale)
    keys = jax.random.split(key, num_steps)

    def body(state, k):
        return step(k, state, log_joint, family, optimizer, estimator, num_samples)

    if tol is None:
        state, trace = jax.lax.scan(body, state, keys)
        return state.params, make_q(state.params, family), trace

    first = jax.tree.leaves(state.params)[0]
    batch, dtype = first.shape[0], first.dtype
    trace0 = jnp.full((num_steps, batch), jnp.nan, dtype)

    def window_mean(trace: Array, end: Array) -> Array:
        # Mean of the batch-averaged bound over steps [end - window, end).
        rows = jax.lax.dynamic_slice_in_dim(trace, end - window, window, axis=0)
        return jnp.mean(rows)

    def converged(trace: Array, t: Array) -> Array:
        ready = t >= 2 * window
        t_safe = jnp.maximum(t, 2 * window)
        last, prev = window_mean(trace, t_safe), window_mean(trace, t_safe - window)
        return ready & (jnp.abs(last - prev) <= tol * jnp.abs(prev))

    def cond(carry):
        _, trace, t = carry
        return (t < num_steps) & ~converged(trace, t)

    def loop(carry):
        state, trace, t = carry
        state, bound = body(state, keys[t])
        return state, trace.at[t].set(bound), t + 1

    if 2 * window > num_steps:
        raise ValueError(f"`window` ({window}) must be at most `num_steps` / 2 ({num_steps}).")
    state, trace, _ = jax.lax.while_loop(cond, loop, (state, trace0, jnp.zeros((), jnp.int32)))
    return state.params, make_q(state.params, family), trace


def svi_theta_step(
    key: Array,
    theta: Any,
    theta_opt_state: Any,
    local_params: dict[str, Array],
    log_joint_of: Callable[[Any], LogJoint],
    *,
    family: str | Family,
    theta_optimizer: optax.GradientTransformation,
    local_optimizer: optax.GradientTransformation | None = None,
    estimator: Estimator = elbo_pathwise,
    num_samples: int = 1,
    num_local_steps: int,
) -> tuple[Any, Any, dict[str, Array], Array]:
    """The lecture's loop, one round: fit phi^(i) for the batch, then one theta step.

    Args:
      key: PRNG key.
      theta: model parameters (a pytree).
      theta_opt_state: `theta_optimizer`'s state for `theta`.
      local_params: per-datapoint params for the batch (warm start), leading `[B]`.
      log_joint_of: `theta -> (z [K, B, D] -> log p_theta(x, z) [K, B])`.
      family: "meanfield", "fullrank" or a `vi_jax.families.Family`.
      theta_optimizer: optax optimiser for theta.
      local_optimizer: optax optimiser for phi (default `optax.adam(1e-2)`).
      estimator: surrogate estimator used for both phases.
      num_samples: K >= 1.
      num_local_steps: inner phi steps >= 1.

    Returns:
      `(theta, theta_opt_state, local_params, bound [B])`, the bound being the
      estimator's value at the theta step.
    """
    k_local, k_theta = jax.random.split(key)
    local_params, _, _ = fit_local(
        k_local,
        log_joint_of(theta),
        local_params,
        family=family,
        optimizer=local_optimizer,
        estimator=estimator,
        num_samples=num_samples,
        num_steps=num_local_steps,
    )
    local_params = jax.lax.stop_gradient(local_params)
    q = make_q(local_params, family)

    def loss(th):
        surrogate = estimator(k_theta, log_joint_of(th), q, num_samples)
        return -jnp.mean(surrogate), surrogate

    grads, bound = jax.grad(loss, has_aux=True)(theta)
    updates, theta_opt_state = theta_optimizer.update(grads, theta_opt_state, theta)
    return optax.apply_updates(theta, updates), theta_opt_state, local_params, bound
