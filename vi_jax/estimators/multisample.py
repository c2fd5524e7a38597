"""Multi-sample bounds with their trade-off: MIWAE, PIWAE and CIWAE (Rainforth et al. 2018).

Tighter bounds are not necessarily better for the inference network: the signal-to-noise
ratio of the IWAE phi-gradient falls like K^(-1/2) while theta's rises like K^(1/2)
(Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh 2018, "Tighter variational bounds are
not necessarily better"). These objectives trade the two off:

| function       | value (bound)                        | theta grad | phi gradient       |
|----------------|--------------------------------------|------------|--------------------|
| miwae_bound    | (1/M) sum_m log (1/K) sum_k w_mk     | --         | --                 |
| miwae_pathwise | MIWAE(M, K)                          | MIWAE      | MIWAE, pathwise    |
| miwae_dreg     | MIWAE(M, K)                          | MIWAE      | MIWAE, DReG        |
| piwae_pathwise | IWAE with all M*K samples            | IWAE(M*K)  | MIWAE(M, K)        |
| piwae_dreg     | IWAE with all M*K samples            | IWAE(M*K)  | MIWAE(M, K), DReG  |
| ciwae_bound    | beta * ELBO + (1 - beta) * IWAE(K)   | --         | --                 |
| ciwae_pathwise | CIWAE(beta)                          | CIWAE      | CIWAE, pathwise    |

`num_samples` is K, the samples per group; `num_groups` is M. Every estimator draws
M * K samples from q in one call: `log_joint` receives z `[M * K, *batch, *event]`
(group m is rows m*K .. m*K + K - 1). MIWAE(1, K) is IWAE(K); MIWAE(M, 1) is the ELBO
with M samples; CIWAE(1) is the ELBO, CIWAE(0) is IWAE(K).

PIWAE's two gradients come from one set of samples and one surrogate: its value is the
IWAE(M*K) bound, its theta-gradient that of IWAE(M*K) and its phi-gradient that of
MIWAE(M, K), so one optimiser step over (theta, phi) is the PIWAE update.
"""

from __future__ import annotations

import numbers

import distrax
import jax
import jax.numpy as jnp

from vi_jax.estimators import _common, registry
from vi_jax.estimators.registry import EstimatorSpec
from vi_jax.types import Array, LogJoint, PRNGKey

sg = jax.lax.stop_gradient


def _check_groups(num_groups: int) -> int:
    if (
        isinstance(num_groups, bool)
        or not isinstance(num_groups, numbers.Integral)
        or num_groups < 1
    ):
        raise ValueError(f"`num_groups` (M) must be an integer >= 1, got {num_groups!r}.")
    return int(num_groups)


def check_beta(beta: float) -> float:
    """Validates a mixture weight in [0, 1] (a static Python float)."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 <= beta <= 1.0:
        raise ValueError(f"`beta` must be a float in [0, 1], got {beta!r}.")
    return float(beta)


def _grouped(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    num_groups: int,
    name: str,
    *,
    reparam: bool = True,
) -> tuple[Array, Array, int, int]:
    """Draws M*K samples; returns z `[M*K, ...]`, log p `[M*K, *batch]`, K, M."""
    k = _common.check_args(log_joint, q, num_samples)
    m = _check_groups(num_groups)
    if reparam:
        _common.require_reparameterized(q, name)
    z = _common.draw(key, q, m * k)
    log_p = _common.evaluate_log_joint(log_joint, z, _common.sample_shape_of(q, m * k))
    return z, log_p, k, m


def _split(x: Array, m: int, k: int) -> Array:
    """`[M*K, *batch] -> [M, K, *batch]`."""
    return x.reshape((m, k) + x.shape[1:])


def miwae_bound(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    num_groups: int = 1,
) -> Array:
    """MIWAE(M, K) bound: the mean over M groups of IWAE(K) bounds.

    Args:
      key: PRNG key.
      log_joint: `z [M*K, *batch, *event] -> log p(x, z) [M*K, *batch]`.
      q: proposal, batch `[*batch]`, event `[*event]`.
      num_samples: K >= 1 per group (static).
      num_groups: M >= 1 (static).

    Returns:
      `[*batch]` one draw of the bound (mean L_K, lying between the ELBO and L_K).
    """
    k = _common.check_args(log_joint, q, num_samples)
    m = _check_groups(num_groups)
    z, log_q = q.sample_and_log_prob(seed=key, sample_shape=(m * k,))
    log_p = _common.evaluate_log_joint(log_joint, z, log_q.shape)
    return jnp.mean(_common.log_mean_exp(_split(log_p - log_q, m, k), axis=1), axis=0)


def _theta_phi_surrogate(
    value: Array, phi_term: Array, log_p_theta: Array, extra_theta_weights: Array
) -> Array:
    """`value` with the gradient of phi_term + sum_k c_k log p_theta,k (c = extra weights).

    `phi_term` = sum_k b_k log w_k carries phi's gradient (through z) and theta's with
    weights b; `log_p_theta` is log p at the stopped z, so adding it with weights a - b
    makes theta's gradient sum_k a_k grad_theta log p_k without touching phi's.
    """
    surrogate = phi_term + _common.weighted_sum(extra_theta_weights, log_p_theta)
    return sg(value) + surrogate - sg(surrogate)


def _miwae_estimator(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    num_groups: int,
    *,
    dreg: bool,
    partial_theta: bool,
    name: str,
) -> Array:
    z, log_p, k, m = _grouped(key, log_joint, q, num_samples, num_groups, name)
    log_q = _common.log_prob_path_only(q, z) if dreg else q.log_prob(z)
    log_w = log_p - log_q  # [M*K, *batch]
    lw_groups = _split(log_w, m, k)
    w_group = sg(_common.snis_weights(lw_groups, axis=1))  # b/M: MIWAE weights, [M, K, *batch]
    phi_weights = (w_group**2 if dreg else w_group).reshape(log_w.shape) / m
    theta_weights = w_group.reshape(log_w.shape) / m
    if partial_theta:
        # theta follows IWAE over all M*K samples.
        theta_weights = sg(_common.snis_weights(log_w, axis=0))
        value = _common.log_mean_exp(log_w, axis=0)
    else:
        value = jnp.mean(_common.log_mean_exp(lw_groups, axis=1), axis=0)
    phi_term = _common.weighted_sum(phi_weights, log_w)
    needs_theta_fix = dreg or partial_theta
    if not needs_theta_fix:
        return sg(value) + phi_term - sg(phi_term)
    log_p_theta = log_joint(sg(z))
    return _theta_phi_surrogate(value, phi_term, log_p_theta, theta_weights - phi_weights)


def miwae_pathwise(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    num_groups: int = 1,
) -> Array:
    """Reparameterisation gradient of the MIWAE(M, K) bound.

    Args:
      key: PRNG key.
      log_joint: `z [M*K, *batch, *event] -> log p(x, z) [M*K, *batch]`.
      q: reparameterised proposal, batch `[*batch]`.
      num_samples: K >= 1 per group (static).
      num_groups: M >= 1 (static).

    Returns:
      Surrogate `[*batch]`: value = one draw of MIWAE(M, K), gradient = its pathwise
      gradient (theta and phi).
    """
    return _miwae_estimator(
        key,
        log_joint,
        q,
        num_samples,
        num_groups,
        dreg=False,
        partial_theta=False,
        name="miwae_pathwise",
    )


def miwae_dreg(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    num_groups: int = 1,
) -> Array:
    """MIWAE(M, K) with the doubly-reparameterised phi-gradient in each group (Tucker et al. 2018).

    Args:
      key: PRNG key.
      log_joint: `z [M*K, *batch, *event] -> log p(x, z) [M*K, *batch]`.
      q: reparameterised proposal, batch `[*batch]`.
      num_samples: K >= 1 per group (static).
      num_groups: M >= 1 (static).

    Returns:
      Surrogate `[*batch]`: value = MIWAE(M, K); theta-gradient that of MIWAE, phi-gradient
      (1/M) sum_m sum_k w~_mk^2 d log w_mk / dz dz/dphi.
    """
    return _miwae_estimator(
        key,
        log_joint,
        q,
        num_samples,
        num_groups,
        dreg=True,
        partial_theta=False,
        name="miwae_dreg",
    )


def piwae_pathwise(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    num_groups: int = 1,
) -> Array:
    """PIWAE(M, K): theta by IWAE over all M*K samples, phi by MIWAE(M, K), pathwise.

    Args:
      key: PRNG key.
      log_joint: `z [M*K, *batch, *event] -> log p(x, z) [M*K, *batch]`.
      q: reparameterised proposal, batch `[*batch]`.
      num_samples: K >= 1 per group (static).
      num_groups: M >= 1 (static).

    Returns:
      Surrogate `[*batch]`: value = IWAE(M*K) bound, theta-gradient = IWAE(M*K)'s,
      phi-gradient = MIWAE(M, K)'s, from the same samples.
    """
    return _miwae_estimator(
        key,
        log_joint,
        q,
        num_samples,
        num_groups,
        dreg=False,
        partial_theta=True,
        name="piwae_pathwise",
    )


def piwae_dreg(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    num_groups: int = 1,
) -> Array:
    """PIWAE(M, K) with the DReG phi-gradient of MIWAE(M, K).

    Args:
      key: PRNG key.
      log_joint: `z [M*K, *batch, *event] -> log p(x, z) [M*K, *batch]`.
      q: reparameterised proposal, batch `[*batch]`.
      num_samples: K >= 1 per group (static).
      num_groups: M >= 1 (static).

    Returns:
      Surrogate `[*batch]`: value = IWAE(M*K) bound, theta-gradient = IWAE(M*K)'s,
      phi-gradient = MIWAE(M, K)'s doubly-reparameterised estimate.
    """
    return _miwae_estimator(
        key,
        log_joint,
        q,
        num_samples,
        num_groups,
        dreg=True,
        partial_theta=True,
        name="piwae_dreg",
    )


def ciwae_bound(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    beta: float = 0.5,
) -> Array:
    """CIWAE(beta) = beta * ELBO + (1 - beta) * IWAE(K), from the same K samples.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: proposal, batch `[*batch]`.
      num_samples: K >= 1 (static).
      beta: mixture weight in [0, 1] (static): 1 gives the ELBO, 0 IWAE.

    Returns:
      `[*batch]` one draw of the bound.
    """
    beta = check_beta(beta)
    k = _common.check_args(log_joint, q, num_samples)
    z, log_q = q.sample_and_log_prob(seed=key, sample_shape=(k,))
    log_w = _common.evaluate_log_joint(log_joint, z, log_q.shape) - log_q
    return beta * jnp.mean(log_w, axis=0) + (1.0 - beta) * _common.log_mean_exp(log_w)


def ciwae_pathwise(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    beta: float = 0.5,
) -> Array:
    """Reparameterisation gradient of CIWAE(beta) (Rainforth et al. 2018).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: reparameterised proposal, batch `[*batch]`.
      num_samples: K >= 1 (static).
      beta: mixture weight in [0, 1] (static).

    Returns:
      Surrogate `[*batch]`: value and gradient of the CIWAE(beta) estimate.
    """
    beta = check_beta(beta)
    z, log_p, k, _ = _grouped(key, log_joint, q, num_samples, 1, "ciwae_pathwise")
    log_w = log_p - q.log_prob(z)
    return beta * jnp.mean(log_w, axis=0) + (1.0 - beta) * _common.log_mean_exp(log_w)


for _spec in (
    EstimatorSpec(
        "miwae",
        "pathwise",
        miwae_pathwise,
        options=("num_groups",),
        summary="MIWAE(M, K): mean of M IWAE(K) bounds, pathwise",
    ),
    EstimatorSpec(
        "miwae",
        "dreg",
        miwae_dreg,
        options=("num_groups",),
        summary="MIWAE(M, K) with the DReG phi-gradient",
    ),
    EstimatorSpec(
        "piwae",
        "pathwise",
        piwae_pathwise,
        options=("num_groups",),
        summary="theta by IWAE(M*K), phi by MIWAE(M, K)",
    ),
    EstimatorSpec(
        "piwae",
        "dreg",
        piwae_dreg,
        options=("num_groups",),
        summary="PIWAE with the DReG phi-gradient",
    ),
    EstimatorSpec(
        "ciwae",
        "pathwise",
        ciwae_pathwise,
        options=("beta",),
        summary="beta * ELBO + (1 - beta) * IWAE, pathwise",
    ),
):
    registry.register(_spec)
