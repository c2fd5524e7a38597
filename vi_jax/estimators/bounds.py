"""Variational bounds on log p(x): the ELBO in three forms, IWAE, Renyi-alpha and CUBO.

Every function here is a Monte Carlo *estimate* of a bound, one value per datum
(shape `q.batch_shape`). Samples are drawn with `q.sample`, so for a reparameterised q
`jax.grad` of a bound is its pathwise gradient; for other gradient estimators see
`vi_jax.estimators.gradients`.

Conventions (docs/CONVENTIONS.md): `log_joint` maps `z [K, *batch, *event]` to
`log p(x, z) [K, *batch]`; `q` has batch `[*batch]` and event `[*event]`.
"""

from __future__ import annotations

import math
from typing import Literal

import distrax
import jax.numpy as jnp

from vi_jax._validation import check_finite_float
from vi_jax.estimators import _common, _logspace
from vi_jax.estimators import kl as _kl
from vi_jax.types import Array, LogJoint


def log_weights(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
) -> tuple[Array, Array]:
    """Draws z ~ q and returns them with their log importance weights.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: variational distribution / proposal, batch `[*batch]`, event `[*event]`.
      num_samples: K >= 1 (static).

    Returns:
      `(z, log_w)`: z `[K, *batch, *event]`, log w = log p(x, z) - log q(z) `[K, *batch]`.
    """
    num_samples = _common.check_args(log_joint, q, num_samples)
    return _common.sample_log_weights(key, log_joint, q, num_samples)


def elbo(key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int = 1) -> Array:
    """ELBO, log-ratio form: E_q[log p(x, z) - log q(z)], averaged over K samples.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: variational distribution, batch `[*batch]`, event `[*event]`.
      num_samples: K >= 1 (static).

    Returns:
      `[*batch]` unbiased estimate of the ELBO.
    """
    _, log_w = log_weights(key, log_joint, q, num_samples)
    return jnp.mean(log_w, axis=0)


def _entropy(q: distrax.Distribution, z: Array, how: str) -> Array:
    if how in ("auto", "analytic"):
        try:
            return q.entropy()
        except NotImplementedError:
            if how == "analytic":
                raise ValueError(
                    f"`entropy='analytic'` but distrax has no closed-form entropy for "
                    f"{type(q).__name__}; use entropy='mc' or 'auto'."
                ) from None
    return -jnp.mean(q.log_prob(z), axis=0)


def elbo_entropy(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int = 1,
    *,
    entropy: Literal["auto", "analytic", "mc"] = "auto",
) -> Array:
    """ELBO, energy + entropy form: E_q[log p(x, z)] + H(q).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: variational distribution, batch `[*batch]`, event `[*event]`.
      num_samples: K >= 1 (static).
      entropy: "analytic" uses distrax's closed form (error if it has none), "mc" the
        Monte Carlo estimate -mean log q(z_k) on the same samples, "auto" the closed
        form when available.

    Returns:
      `[*batch]` unbiased estimate of the ELBO.
    """
    if entropy not in ("auto", "analytic", "mc"):
        raise ValueError(f"`entropy` must be 'auto', 'analytic' or 'mc', got {entropy!r}.")
    z, log_p = _common.sample_and_weigh(key, log_joint, q, num_samples)
    return jnp.mean(log_p, axis=0) + _entropy(q, z, entropy)


def kl_divergence(
    key: Array,
    q: distrax.Distribution,
    prior: distrax.Distribution,
    num_samples: int = 1,
    *,
    method: Literal["auto", "analytic", "mc"] = "auto",
    z: Array | None = None,
) -> Array:
    """KL(q || prior), closed form where distrax has it, else Monte Carlo.

    Args:
      key: PRNG key (used only by the Monte Carlo estimate).
      q: distribution with batch `[*batch]`, event `[*event]`.
      prior: distribution with event `[*event]` and a batch broadcastable to q's.
      num_samples: K for the Monte Carlo estimate.
      method: "analytic" (error if distrax has no closed form), "mc", or "auto".
      z: optional samples `[K, *batch, *event]` from q to reuse for the MC estimate.

    Returns:
      `[*batch]` KL divergence (exact or an unbiased estimate).
    """
    method = _kl.check_kl_method(method, "method")
    _common.check_distribution(prior, "prior")
    if method in ("auto", "analytic"):
        exact = _kl.analytic_kl(q, prior)
        if exact is not None:
            return exact
        if method == "analytic":
            raise ValueError(
                f"`method='analytic'` but distrax has no closed-form KL between "
                f"{type(q).__name__} and {type(prior).__name__}; use 'mc' or 'auto'."
            )
    if z is None:
        z = _common.draw(key, q, _common.check_positive_int(num_samples, "num_samples"))
    return jnp.mean(q.log_prob(z) - prior.log_prob(z), axis=0)


def elbo_kl(
    key: Array,
    log_likelihood: LogJoint,
    q: distrax.Distribution,
    prior: distrax.Distribution,
    num_samples: int = 1,
    *,
    kl: Literal["auto", "analytic", "mc"] = "auto",
) -> Array:
    """ELBO, reconstruction - KL form: E_q[log p(x | z)] - KL(q || p(z)).

    Args:
      key: PRNG key.
      log_likelihood: `z [K, *batch, *event] -> log p(x | z) [K, *batch]`.
      q: variational distribution, batch `[*batch]`, event `[*event]`.
      prior: p(z), event `[*event]`.
      num_samples: K >= 1 (static).
      kl: "analytic", "mc" (on the same samples) or "auto" (closed form if distrax has it).

    Returns:
      `[*batch]` unbiased estimate of the ELBO.
    """
    kl = _kl.check_kl_method(kl, "kl")
    _common.check_distribution(prior, "prior")
    z, log_lik = _common.sample_and_weigh(key, log_likelihood, q, num_samples)
    return jnp.mean(log_lik, axis=0) - kl_divergence(key, q, prior, method=kl, z=z)


def iwae_bound(key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int) -> Array:
    """Importance-weighted bound (Burda et al. 2016): log (1/K) sum_k p(x, z_k) / q(z_k).

    Its expectation increases with K towards log p(x); K = 1 is the ELBO.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: proposal, batch `[*batch]`, event `[*event]`.
      num_samples: K >= 1 (static).

    Returns:
      `[*batch]` one draw of the bound (its mean is L_K <= log p(x)).
    """
    _, log_w = log_weights(key, log_joint, q, num_samples)
    return _logspace.log_mean_exp_nan_aware(log_w)


def renyi_from_log_weights(log_w: Array, alpha: float) -> Array:
    """Renyi-alpha bound from log-weights `[K, *batch]` -> `[*batch]`."""
    if alpha == 1.0:
        return jnp.mean(log_w, axis=0)
    return _logspace.log_mean_exp_nan_aware((1.0 - alpha) * log_w) / (1.0 - alpha)


def renyi_bound(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    alpha: float,
) -> Array:
    """Variational Renyi bound (Li & Turner 2016): 1/(1-a) log (1/K) sum_k w_k^(1-a).

    alpha = 0 gives the IWAE bound, alpha -> 1 the ELBO (alpha = 1 is computed as the
    ELBO exactly). For 0 <= alpha the expectation lies below log p(x); alpha < 0 gives
    upper bounds in the limit of many samples.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: variational distribution, batch `[*batch]`, event `[*event]`.
      num_samples: K >= 1 (static).
      alpha: the Renyi order, a static finite float.

    Returns:
      `[*batch]` one draw of the bound's Monte Carlo estimate.
    """
    alpha = check_finite_float(alpha, "alpha")
    _, log_w = log_weights(key, log_joint, q, num_samples)
    return renyi_from_log_weights(log_w, alpha)


def cubo(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    n: float = 2.0,
) -> Array:
    """Chi upper bound CUBO_n (Dieng et al. 2017): (1/n) log (1/K) sum_k w_k^n.

    CUBO_n = (1/n) log E_q[w^n] >= log p(x) for n >= 1. Its K-sample estimate is biased
    downward (log of a mean), so the sandwich ELBO <= log p(x) <= CUBO is reliable only for
    large K and a q whose tails are wider than the posterior's (else E_q[w^n] may be
    infinite). n = 1 gives the IS estimate of log p(x).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: variational distribution, batch `[*batch]`, event `[*event]`.
      num_samples: K >= 1 (static).
      n: order >= 1 (static).

    Returns:
      `[*batch]` estimate of CUBO_n.
    """
    if isinstance(n, bool) or not isinstance(n, int | float) or not n >= 1 or math.isinf(n):
        raise ValueError(f"`n` must be a finite float >= 1, got {n!r}.")
    _, log_w = log_weights(key, log_joint, q, num_samples)
    return _logspace.log_mean_exp_nan_aware(n * log_w) / n
