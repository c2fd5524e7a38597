"""Reweighted wake-sleep (Bornschein & Bengio 2015; Le, Kosiorek, Siddharth, Teh & Wood 2019).

The forward KL, KL(p(z|x) || q), cannot be estimated with samples from the posterior,
but self-normalised importance sampling with q as the proposal makes its gradient
practical: with z_k ~ q and w~_k = w_k / sum_j w_j,

    -grad_phi KL(p(z|x) || q) = E_{p(z|x)}[grad_phi log q(z)] ~ sum_k w~_k grad_phi log q(z_k).

That is the *wake-phi* update. It needs no reparameterisation (it works for discrete q),
and it is biased at finite K (a ratio of estimates; the bias is O(1/K)), consistent as
K grows. The *wake-theta* update is the IWAE theta-gradient sum_k w~_k grad_theta
log p(x, z_k). The *sleep-phi* update trains q on the model's own samples:
(z, x) ~ p(z) p(x | z), maximise log q(z | x) (`sleep_phi`).

Each estimator here follows the surrogate contract of `vi_jax.estimators`: its value is
one draw of the IWAE bound L_K, and its gradient is the RWS update (wake-theta for what
`log_joint` closes over, wake-phi for what `q` closes over), so that one optimiser step
over (theta, phi) is one RWS step. Samples are drawn with their path cut: no gradient
flows through z.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp

from vi_jax.estimators import _common, registry
from vi_jax.estimators.registry import EstimatorSpec
from vi_jax.types import Array, LogJoint, PRNGKey

sg = jax.lax.stop_gradient


def _check_wake_phi_samples(num_samples: int, name: str) -> None:
    # With K = 1 the single weight is 1 and the update is grad log q(z), z ~ q: zero in
    # expectation (the score identity), so wake-phi learns nothing.
    if isinstance(num_samples, int) and not isinstance(num_samples, bool) and num_samples < 2:
        raise ValueError(
            f"`num_samples` must be >= 2 for {name}: with K = 1 the self-normalised weight "
            f"is 1 and the wake-phi gradient is zero in expectation, got {num_samples}."
        )


def _rws(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    theta: bool,
    phi: bool,
) -> Array:
    num_samples = _common.check_args(log_joint, q, num_samples)
    z = _common.draw(key, q, num_samples, stop_grad=True)
    log_p = _common.evaluate_log_joint(log_joint, z, _common.sample_shape_of(q, num_samples))
    log_q = q.log_prob(z)
    log_w = log_p - log_q
    w_tilde = sg(_common.snis_weights(log_w))
    surrogate = jnp.zeros(log_w.shape[1:], log_w.dtype)
    if theta:
        surrogate = surrogate + _common.weighted_sum(w_tilde, log_p)
    if phi:
        surrogate = surrogate + _common.weighted_sum(w_tilde, log_q)
    return sg(_common.log_mean_exp(log_w)) + surrogate - sg(surrogate)


def rws_wake(key: PRNGKey, log_joint: LogJoint, q: distrax.Distribution, num_samples: int) -> Array:
    """Reweighted wake-sleep, wake-theta and wake-phi in one surrogate.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: proposal (any; discrete is fine), batch `[*batch]`.
      num_samples: K >= 2 (static).

    Returns:
      Surrogate `[*batch]`: value = one draw of L_K; theta-gradient
      sum_k w~_k grad_theta log p(x, z_k) (IWAE's), phi-gradient
      sum_k w~_k grad_phi log q(z_k) (the SNIS estimate of -grad_phi KL(p(z|x) || q)).
    """
    _check_wake_phi_samples(num_samples, "rws_wake")
    return _rws(key, log_joint, q, num_samples, theta=True, phi=True)


def rws_wake_theta(
    key: PRNGKey, log_joint: LogJoint, q: distrax.Distribution, num_samples: int
) -> Array:
    """The wake-theta update alone: IWAE's theta-gradient, no gradient to q.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: proposal (any), batch `[*batch]`.
      num_samples: K >= 1 (static).

    Returns:
      Surrogate `[*batch]`: value = one draw of L_K, theta-gradient
      sum_k w~_k grad_theta log p(x, z_k), phi-gradient 0.
    """
    return _rws(key, log_joint, q, num_samples, theta=True, phi=False)


def rws_wake_phi(
    key: PRNGKey, log_joint: LogJoint, q: distrax.Distribution, num_samples: int
) -> Array:
    """The wake-phi update alone: the forward-KL gradient for q, no gradient to the model.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: proposal (any), batch `[*batch]`.
      num_samples: K >= 2 (static).

    Returns:
      Surrogate `[*batch]`: value = one draw of L_K, phi-gradient
      sum_k w~_k grad_phi log q(z_k) (biased, O(1/K), for -grad_phi KL(p(z|x) || q)),
      theta-gradient 0.
    """
    _check_wake_phi_samples(num_samples, "rws_wake_phi")
    return _rws(key, log_joint, q, num_samples, theta=False, phi=True)


def sleep_phi(q: distrax.Distribution, z: Array) -> Array:
    """Sleep-phi: log q(z | x) at the model's own samples (z, x) ~ p(z) p(x | z).

    Maximising it in phi fits q(z | x) to the model's posterior in the forward direction,
    averaged over the model's marginal p(x) instead of the data.

    Args:
      q: q(z | x_sim), batch `[*batch]`, built from the simulated x.
      z: the latents `[*batch, *event]` (or `[K, *batch, *event]`) that generated x_sim;
        held constant.

    Returns:
      `[*batch]` (or `[K, *batch]`) log q(z | x_sim); its gradient is the sleep-phi update.
    """
    if not isinstance(q, distrax.Distribution):
        raise TypeError(f"`q` must be a distrax distribution, got {type(q).__name__}.")
    return q.log_prob(sg(z))


for _spec in (
    EstimatorSpec(
        "rws",
        "wake",
        rws_wake,
        min_samples=2,
        needs_reparam=False,
        discrete_ok=True,
        summary="reweighted wake-sleep: wake-theta + wake-phi (forward KL for q)",
    ),
    EstimatorSpec(
        "rws",
        "wake_theta",
        rws_wake_theta,
        needs_reparam=False,
        discrete_ok=True,
        summary="wake-theta only (IWAE theta-gradient; q not trained)",
    ),
    EstimatorSpec(
        "rws",
        "wake_phi",
        rws_wake_phi,
        min_samples=2,
        needs_reparam=False,
        discrete_ok=True,
        summary="wake-phi only (forward-KL gradient for q; model not trained)",
    ),
):
    registry.register(_spec)
