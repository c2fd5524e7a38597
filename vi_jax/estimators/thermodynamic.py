"""The thermodynamic variational objective (TVO; Masrani, Le & Wood 2019).

With w = p(x, z) / q(z) and the geometric path pi_beta(z) ∝ q(z)^(1-beta) p(x, z)^beta,
log p(x) = integral_0^1 E_{pi_beta}[log w] d beta (thermodynamic integration), and the
integrand increases in beta. A left Riemann sum over a schedule
0 = beta_0 < beta_1 < ... < beta_{S-1} < beta_S = 1 is therefore a lower bound,

    TVO = sum_{j<S} (beta_{j+1} - beta_j) E_{pi_{beta_j}}[log w]  <=  log p(x),

and the right Riemann sum an upper bound. With the single point beta_0 = 0 the TVO is the
ELBO. Each expectation is estimated by self-normalised importance sampling from K samples
of q (weights w_k^beta), so the estimate is consistent, biased at finite K.

The gradient is the covariance form of the paper: for f = log w and
log pi~_beta = log q + beta log w,

    grad E_{pi_beta}[f] = E_{pi_beta}[grad f] + Cov_{pi_beta}(f, grad log pi~_beta),

with both expectations by SNIS. It needs no reparameterisation: samples are drawn with
their path cut, so the TVO trains discrete latent-variable models too.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vi_jax.estimators import _common, registry
from vi_jax.estimators.registry import EstimatorSpec
from vi_jax.types import Array, LogJoint, PRNGKey

sg = jax.lax.stop_gradient


def tvo_schedule(
    num_partitions: int, beta_min: float = 0.01, spacing: str = "log"
) -> tuple[float, ...]:
    """The left endpoints (beta_0 = 0, beta_1, ..., beta_{S-1}) of a TVO partition.

    Args:
      num_partitions: S >= 1 intervals of [0, 1].
      beta_min: beta_1 in (0, 1) for `spacing="log"` (Masrani et al. use a log-uniform
        grid from beta_1 to 1).
      spacing: "log" (beta_1..beta_{S-1} log-uniform in [beta_min, 1)) or "linear"
        (beta_j = j / S).

    Returns:
      A tuple of S floats, strictly increasing, starting at 0 and below 1.
    """
    if (
        isinstance(num_partitions, bool)
        or not isinstance(num_partitions, numbers.Integral)
        or num_partitions < 1
    ):
        raise ValueError(f"`num_partitions` must be an integer >= 1, got {num_partitions!r}.")
    s = int(num_partitions)
    if spacing == "linear":
        return tuple(j / s for j in range(s))
    if spacing != "log":
        raise ValueError(f"`spacing` must be 'log' or 'linear', got {spacing!r}.")
    if not (isinstance(beta_min, numbers.Real) and 0.0 < beta_min < 1.0):
        raise ValueError(f"`beta_min` must be in (0, 1), got {beta_min!r}.")
    if s == 1:
        return (0.0,)
    # S - 1 log-uniform points from beta_min up to (excluding) 1.
    inner = np.logspace(math.log10(beta_min), 0.0, s, endpoint=True)[:-1]
    return (0.0, *(float(b) for b in inner))


def check_schedule(betas: Sequence[float]) -> tuple[float, ...]:
    """Validates a TVO schedule: starts at 0, strictly increasing, every point in [0, 1).

    Returns:
      The schedule as a tuple of Python floats.
    """
    try:
        values = tuple(float(b) for b in betas)
    except TypeError:
        raise TypeError(
            f"`betas` must be a sequence of floats (a static schedule), got {type(betas).__name__}."
        ) from None
    if not values:
        raise ValueError("`betas` must hold at least one point (beta_0 = 0).")
    if values[0] != 0.0:
        raise ValueError(f"`betas` must start at 0 (the ELBO end of the path), got {values[0]}.")
    if any(not (0.0 <= b < 1.0) or not math.isfinite(b) for b in values):
        raise ValueError(f"`betas` must lie in [0, 1), got {values}.")
    if any(b1 <= b0 for b0, b1 in zip(values, values[1:], strict=False)):
        raise ValueError(f"`betas` must be strictly increasing, got {values}.")
    return values


def _widths(betas: tuple[float, ...]) -> np.ndarray:
    return np.diff(np.asarray((*betas, 1.0)))


def _log_weights(
    key: PRNGKey, log_joint: LogJoint, q: distrax.Distribution, num_samples: int
) -> tuple[Array, Array]:
    num_samples = _common.check_args(log_joint, q, num_samples)
    z = _common.draw(key, q, num_samples, stop_grad=True)
    log_p = _common.evaluate_log_joint(log_joint, z, _common.sample_shape_of(q, num_samples))
    return log_p, q.log_prob(z)


def tvo_bound(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    betas: Sequence[float] = (0.0, 0.01, 0.1, 0.5),
    upper: bool = False,
) -> Array:
    """SNIS estimate of the TVO's left (lower bound) or right (upper bound) Riemann sum.

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: proposal, batch `[*batch]`.
      num_samples: K >= 1 (static).
      betas: the left endpoints beta_0 = 0 < ... < beta_{S-1} < 1 (static), e.g. from
        `tvo_schedule`.
      upper: evaluate the integrand at the right endpoints (beta_1, ..., beta_S = 1):
        an upper bound on log p(x) (in the limit of many samples).

    Returns:
      `[*batch]` estimate of the Riemann sum.
    """
    betas = check_schedule(betas)
    log_p, log_q = _log_weights(key, log_joint, q, num_samples)
    log_w = log_p - log_q
    points = (*betas[1:], 1.0) if upper else betas
    total = jnp.zeros(log_w.shape[1:], log_w.dtype)
    for beta, width in zip(points, _widths(betas), strict=True):
        s = _common.snis_weights(beta * log_w)
        total = total + float(width) * _common.weighted_sum(s, log_w)
    return total


def tvo(
    key: PRNGKey,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    betas: Sequence[float] = (0.0, 0.01, 0.1, 0.5),
) -> Array:
    """The TVO lower bound with its covariance-form gradient (Masrani et al. 2019).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: proposal (any; discrete is fine), batch `[*batch]`.
      num_samples: K >= 2 (static; the covariance needs two samples).
      betas: left endpoints beta_0 = 0 < ... < beta_{S-1} < 1 (static).

    Returns:
      Surrogate `[*batch]`: value = the SNIS estimate of the left Riemann sum; gradient
      (theta and phi) = sum_j (beta_{j+1} - beta_j) [E_j[grad log w] +
      Cov_j(log w, grad (log q + beta_j log w))], each moment by SNIS.
    """
    betas = check_schedule(betas)
    if isinstance(num_samples, int) and not isinstance(num_samples, bool) and num_samples < 2:
        raise ValueError(
            f"`num_samples` must be >= 2 for the TVO's covariance gradient, got {num_samples}."
        )
    log_p, log_q = _log_weights(key, log_joint, q, num_samples)
    log_w = log_p - log_q  # differentiable: theta through log p, phi through log q
    lw = sg(log_w)
    value = jnp.zeros(lw.shape[1:], lw.dtype)
    surrogate = jnp.zeros(lw.shape[1:], lw.dtype)
    for beta, width in zip(betas, _widths(betas), strict=True):
        s = sg(_common.snis_weights(beta * lw))
        mean_f = _common.weighted_sum(s, lw)
        centred = jnp.where(s == 0, 0.0, lw - mean_f[None])
        log_target = log_q + beta * log_w
        term = _common.weighted_sum(s, log_w) + _common.weighted_sum(s, centred * log_target)
        value = value + float(width) * mean_f
        surrogate = surrogate + float(width) * term
    return sg(value) + surrogate - sg(surrogate)


registry.register(
    EstimatorSpec(
        "tvo",
        "covariance",
        tvo,
        min_samples=2,
        needs_reparam=False,
        discrete_ok=True,
        options=("betas",),
        summary="thermodynamic variational objective, covariance gradient",
    )
)
