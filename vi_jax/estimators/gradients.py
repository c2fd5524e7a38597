"""Gradient estimators as surrogate objectives.

Each estimator has the signature `estimator(key, log_joint, q, num_samples, **options)`
and returns a surrogate `[*batch]`: its *value* is an estimate of the bound named in
the function (ELBO or IWAE bound L_K) and its *gradient*, w.r.t. whatever `log_joint`
(model parameters theta) and `q` (variational parameters phi) close over, is the
estimator's gradient of that bound. Swapping estimators is swapping one function:

    loss = -jnp.mean(estimator(key, log_joint, q, num_samples))

`stop_gradient` places each term. Notation: w_k = p(x, z_k) / q(z_k), w~_k = w_k / sum_j w_j.

| estimator              | bound | needs reparam. q | gradient w.r.t. phi                          |
|------------------------|-------|------------------|----------------------------------------------|
| elbo_pathwise          | ELBO  | yes              | mean_k d/dphi [log p(x,z_k) - log q(z_k)]    |
| elbo_stl               | ELBO  | yes              | path term only (score term dropped)          |
| elbo_score_function    | ELBO  | no               | mean_k (f_k - b) grad log q(z_k)             |
| elbo_score_function_loo| ELBO  | no               | leave-one-out baseline b_k                   |
| iwae_pathwise          | L_K   | yes              | sum_k w~_k d/dphi log w_k                    |
| iwae_stl               | L_K   | yes              | path term only (biased for K > 1)            |
| iwae_dreg              | L_K   | yes              | sum_k w~_k^2 (dlog w_k / dz) dz/dphi         |
| vimco                  | L_K   | no               | per-sample leave-one-out learning signals    |

The gradient w.r.t. theta is always the unbiased mean_k grad log p(x, z_k) (ELBO) or
sum_k w~_k grad log p(x, z_k) (L_K).
"""

from __future__ import annotations

import dataclasses

import distrax
import jax
import jax.numpy as jnp

from vi_jax._validation import check_finite, check_finite_float
from vi_jax.estimators import _common, _logspace, registry
from vi_jax.estimators.baselines import MovingAverage
from vi_jax.estimators.bounds import renyi_from_log_weights
from vi_jax.estimators.registry import EstimatorSpec
from vi_jax.types import Array, LogJoint

sg = jax.lax.stop_gradient


def _reparam_log_weights(
    key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int, name: str
) -> tuple[Array, Array, Array]:
    """Reparameterised z, log p(x, z) and log q(z), with the full gradient path.

    log q comes from the sampling pass (`q.sample_and_log_prob`): for a flow that is one
    forward pass, where `q.log_prob(z)` would invert the flow (sequential for IAF).
    """
    num_samples = _common.check_args(log_joint, q, num_samples)
    _common.require_reparameterized(q, name)
    z, log_q = _common.draw_and_log_prob(key, q, num_samples)
    log_p = _common.evaluate_log_joint(log_joint, z, _common.sample_shape_of(q, num_samples))
    return z, log_p, log_q


def _safe_softmax(log_w: Array) -> Array:
    """Normalised weights over axis 0.

    All-zero (not NaN) where every log-weight is -inf; NaN where a log-weight is NaN
    (a NaN is never read as a zero weight).
    """
    return _logspace.normalized_weights(log_w, zero_mass=0.0)


def _weighted(weights: Array, values: Array) -> Array:
    """Weights * values with 0 * (-inf) read as 0 (zero-weight samples drop out).

    A NaN weight, or a NaN value with a non-zero weight, stays NaN.
    """
    return jnp.where(weights == 0, 0.0, weights * values)


# --------------------------------------------------------------------- pathwise / STL


def elbo_pathwise(
    key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int = 1
) -> Array:
    """Reparameterisation (pathwise) estimator of the ELBO gradient.

    Requires q to be reparameterised (z = g_phi(eps)) and log p(x, z) differentiable in z.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: reparameterised variational distribution, batch `[*batch]`.
      num_samples: K >= 1 (static).

    Returns:
      Surrogate `[*batch]`: value = K-sample ELBO estimate, gradient = pathwise gradient.
    """
    _, log_p, log_q = _reparam_log_weights(key, log_joint, q, num_samples, "elbo_pathwise")
    return jnp.mean(log_p - log_q, axis=0)


def elbo_stl(
    key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int = 1
) -> Array:
    """Sticking-the-landing estimator (Roeder, Wu & Duvenaud 2017) of the ELBO gradient.

    The pathwise estimator with the score term E_q[grad_phi log q(z)] = 0 removed:
    log q is evaluated with its parameters held constant, so only the path through z
    carries gradient. Unbiased; its variance is zero when q equals the posterior.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: reparameterised variational distribution, batch `[*batch]`.
      num_samples: K >= 1 (static).

    Returns:
      Surrogate `[*batch]`: value = K-sample ELBO estimate, gradient = STL gradient.
    """
    z, log_p, log_q = _reparam_log_weights(key, log_joint, q, num_samples, "elbo_stl")
    return jnp.mean(log_p - _common.log_prob_path_only(q, z, log_q), axis=0)


def iwae_pathwise(
    key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int
) -> Array:
    """Reparameterisation estimator of the IWAE bound's gradient (Burda et al. 2016).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: reparameterised proposal, batch `[*batch]`.
      num_samples: K >= 1 (static).

    Returns:
      Surrogate `[*batch]`: value = one draw of L_K, gradient = its pathwise gradient.
    """
    _, log_p, log_q = _reparam_log_weights(key, log_joint, q, num_samples, "iwae_pathwise")
    return _logspace.log_mean_exp_nan_aware(log_p - log_q)


def iwae_stl(key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int) -> Array:
    """IWAE with the score term dropped, as in Roeder et al. (2017).

    Note: for K > 1 this is a *biased* estimator of grad_phi L_K (Tucker et al. 2018
    show the dropped term has non-zero mean); `iwae_dreg` is the unbiased fix. The theta
    gradient is unbiased.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: reparameterised proposal, batch `[*batch]`.
      num_samples: K >= 1 (static).

    Returns:
      Surrogate `[*batch]`: value = one draw of L_K.
    """
    z, log_p, log_q = _reparam_log_weights(key, log_joint, q, num_samples, "iwae_stl")
    return _logspace.log_mean_exp_nan_aware(log_p - _common.log_prob_path_only(q, z, log_q))


def iwae_dreg(key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int) -> Array:
    """Doubly-reparameterised gradient of the IWAE bound (Tucker, Lawson, Gu & Maddison 2018).

    phi gradient: sum_k w~_k^2 (d log w_k / d z_k) dz_k/dphi, with log q's parameters held
    constant in log w (unbiased, and its SNR does not vanish as K grows);
    theta gradient: sum_k w~_k grad_theta log p(x, z_k), as for IWAE.

    It costs a second evaluation of `log_joint` (at the stopped samples), which carries
    the theta gradient while the first carries the phi gradient.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`; must be
        differentiable in z.
      q: reparameterised proposal, batch `[*batch]`.
      num_samples: K >= 1 (static).

    Returns:
      Surrogate `[*batch]`: value = one draw of L_K, gradient = the DReG gradient.
    """
    z, log_p, log_q = _reparam_log_weights(key, log_joint, q, num_samples, "iwae_dreg")
    log_w = log_p - _common.log_prob_path_only(q, z, log_q)
    w_tilde = sg(_safe_softmax(log_w))
    # theta-only copy of log p: same value, no path to phi.
    log_p_theta = log_joint(sg(z))
    path_phi = jnp.sum(_weighted(w_tilde**2, log_w), axis=0)
    # remove the theta-gradient that `path_phi` carries through log_p, add the IWAE one.
    theta = jnp.sum(_weighted(w_tilde - w_tilde**2, log_p_theta), axis=0)
    surrogate = path_phi + theta
    return sg(_logspace.log_mean_exp_nan_aware(log_w)) + surrogate - sg(surrogate)


def renyi_pathwise(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    alpha: float,
) -> Array:
    """Reparameterisation estimator of the Renyi-alpha bound's gradient (Li & Turner 2016).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: reparameterised variational distribution, batch `[*batch]`.
      num_samples: K >= 1 (static).
      alpha: Renyi order (static float); 0 gives IWAE, 1 the ELBO.

    Returns:
      Surrogate `[*batch]`: value and gradient of the K-sample Renyi bound estimate.
    """
    alpha = check_finite_float(alpha, "alpha")
    _, log_p, log_q = _reparam_log_weights(key, log_joint, q, num_samples, "renyi_pathwise")
    return renyi_from_log_weights(log_p - log_q, alpha)


# --------------------------------------------------------------------- score function


def _score_function_parts(
    key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int
) -> tuple[Array, Array, int]:
    """Samples with the path cut; returns f_k (theta-differentiable) and log q(z_k)."""
    z, log_p = _common.sample_and_weigh(key, log_joint, q, num_samples, stop_grad=True)
    log_q = q.log_prob(z)
    # f_k = log p - log q with q's parameters held: grad_phi comes only from the score term.
    return log_p - sg(log_q), log_q, int(num_samples)


def elbo_score_function(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int = 1,
    *,
    baseline: MovingAverage | Array | float | None = None,
) -> Array:
    """Score-function (REINFORCE, likelihood-ratio) estimator of the ELBO gradient.

    phi gradient: mean_k (f_k - b) grad_phi log q(z_k), f_k = log p(x, z_k) - log q(z_k).
    Needs only log q differentiable in phi (discrete q is fine); unbiased for any b that
    does not depend on z_1..K, e.g. a `MovingAverage` of past ELBO values carried by the
    caller (`avg = avg.update(surrogate)` after the step).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: variational distribution (any), batch `[*batch]`.
      num_samples: K >= 1 (static).
      baseline: None (b = 0), a scalar, an array broadcastable to `[*batch]`, or a
        `MovingAverage` of such a shape (its `value()`).

    Returns:
      Surrogate `[*batch]`: value = K-sample ELBO estimate, gradient = score-function
      gradient (theta gradient: mean_k grad_theta log p(x, z_k)).
    """
    if baseline is not None and (
        isinstance(baseline, bool)
        or not (isinstance(baseline, int | float | MovingAverage) or hasattr(baseline, "dtype"))
    ):
        raise TypeError(
            "`baseline` must be None, a number or an array broadcastable to q.batch_shape, "
            f"got {type(baseline).__name__}: {baseline!r}."
        )
    f, log_q, _ = _score_function_parts(key, log_joint, q, num_samples)
    if isinstance(baseline, MovingAverage):
        baseline = baseline.value()
    if baseline is None:
        baseline = 0.0
    else:
        check_finite(baseline, "baseline")
        if jnp.ndim(baseline) > len(q.batch_shape):
            raise ValueError(
                f"`baseline` must be a scalar or broadcast to q.batch_shape {q.batch_shape}, "
                f"got shape {jnp.shape(baseline)}."
            )
    return jnp.mean(f + _common.score_term(log_q, f - baseline, f), axis=0)


def elbo_score_function_loo(
    key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int
) -> Array:
    """Score-function estimator with the leave-one-out baseline b_k = mean_{j != k} f_j.

    b_k is independent of z_k, so the estimator stays unbiased (Kool et al. 2019,
    "Buy 4 REINFORCE samples, get a baseline for free"); it needs K >= 2.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: variational distribution (any), batch `[*batch]`.
      num_samples: K >= 2 (static).

    Returns:
      Surrogate `[*batch]`: value = K-sample ELBO estimate.
    """
    if isinstance(num_samples, int) and not isinstance(num_samples, bool) and num_samples < 2:
        raise ValueError(
            f"`num_samples` must be >= 2 for a leave-one-out baseline, got {num_samples}."
        )
    f, log_q, k = _score_function_parts(key, log_joint, q, num_samples)
    loo_baseline = (jnp.sum(f, axis=0, keepdims=True) - f) / (k - 1)
    # A zero-mass sample (f = -inf) keeps its -inf value but adds no model gradient; a
    # NaN f makes the model's gradient NaN too, not only q's.
    signal = _common.score_term(log_q, f - loo_baseline, f)
    return _common.nan_out(jnp.mean(_common.finite_or_const(f) + signal, axis=0), f)


def vimco(key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int) -> Array:
    """VIMCO (Mnih & Rezende 2016): score-function gradient of the IWAE bound L_K.

    phi gradient: sum_k (L_K - L_K^{-k}) grad log q(z_k) + sum_k w~_k grad_phi log w_k,
    where L_K^{-k} replaces log w_k by the mean of the other log-weights (geometric-mean
    leave-one-out baseline). Works for discrete q; needs K >= 2.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: variational distribution (any), batch `[*batch]`.
      num_samples: K >= 2 (static).

    Returns:
      Surrogate `[*batch]`: value = one draw of L_K, gradient = the VIMCO gradient.
    """
    if isinstance(num_samples, int) and not isinstance(num_samples, bool) and num_samples < 2:
        raise ValueError(f"`num_samples` must be >= 2 for VIMCO, got {num_samples}.")
    z, log_p = _common.sample_and_weigh(key, log_joint, q, num_samples, stop_grad=True)
    log_q = q.log_prob(z)
    log_w = log_p - log_q
    bound = _logspace.log_mean_exp_nan_aware(log_w)
    k = int(num_samples)
    lw = sg(log_w)
    # [K(left out), K(sample), *batch]: log_w with entry k replaced by the others' mean.
    # The sums are masked, not subtracted, so that -inf log-weights give no NaN.
    eye = jnp.eye(k, dtype=bool).reshape((k, k) + (1,) * (lw.ndim - 1))
    others_mean = jnp.sum(jnp.where(eye, 0.0, lw[None, :]), axis=1) / (k - 1)
    replaced = jnp.where(eye, others_mean[:, None], lw[None, :])
    loo_bound = _logspace.log_mean_exp_nan_aware(replaced, axis=1)
    signal = sg(bound)[None] - loo_bound
    return bound + jnp.sum(_common.score_term(log_q, signal, log_w), axis=0)


def update_moving_average(average: Array, value: Array, decay: float = 0.9) -> Array:
    """One raw (not debiased) moving-average step, d * avg + (1 - d) * value.

    Kept for older code; `MovingAverage` (init / value / update, zero-debiased) is the
    library's moving average and what `baseline=` accepts.

    Args:
      average: current baseline, scalar or `[*batch]`.
      value: new observations (held constant), broadcastable to `average`.
      decay: in [0, 1).

    Returns:
      The updated baseline, same shape as `average`.
    """
    average = jnp.asarray(average, jnp.result_type(average, float))
    state = MovingAverage.init(jnp.shape(average), decay=decay, zero_debias=False)
    return dataclasses.replace(state, average=average).update(value).average


_SPECS = (
    EstimatorSpec("elbo", "pathwise", elbo_pathwise, summary="reparameterised ELBO gradient"),
    EstimatorSpec("elbo", "stl", elbo_stl, summary="sticking the landing: score term dropped"),
    EstimatorSpec(
        "elbo",
        "score_function",
        elbo_score_function,
        needs_reparam=False,
        discrete_ok=True,
        options=("baseline",),
        summary="REINFORCE, optional baseline",
    ),
    EstimatorSpec(
        "elbo",
        "score_function_loo",
        elbo_score_function_loo,
        min_samples=2,
        needs_reparam=False,
        discrete_ok=True,
        summary="REINFORCE with the leave-one-out baseline",
    ),
    EstimatorSpec("iwae", "pathwise", iwae_pathwise, summary="reparameterised IWAE gradient"),
    EstimatorSpec("iwae", "stl", iwae_stl, summary="IWAE-STL (biased for K > 1)"),
    EstimatorSpec("iwae", "dreg", iwae_dreg, summary="doubly reparameterised IWAE gradient"),
    EstimatorSpec(
        "iwae",
        "vimco",
        vimco,
        min_samples=2,
        needs_reparam=False,
        discrete_ok=True,
        summary="VIMCO leave-one-out learning signals",
    ),
    EstimatorSpec(
        "renyi",
        "pathwise",
        renyi_pathwise,
        options=("alpha",),
        summary="reparameterised Renyi-bound gradient",
    ),
)
for _spec in _SPECS:
    registry.register(_spec)

# Legacy flat names (kept importable); new code uses `registry.get_estimator`.
ESTIMATORS = {
    "pathwise": elbo_pathwise,
    "stl": elbo_stl,
    "score_function": elbo_score_function,
    "score_function_loo": elbo_score_function_loo,
    "iwae_pathwise": iwae_pathwise,
    "iwae_stl": iwae_stl,
    "dreg": iwae_dreg,
    "vimco": vimco,
}
"""Legacy flat name -> estimator; use `vi_jax.estimators.registry` instead."""
