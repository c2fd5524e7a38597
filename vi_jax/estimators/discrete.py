"""Gradient estimators for discrete latents, and the exact ELBO by enumerating q's support.

Same surrogate contract as `vi_jax.estimators.gradients`: `estimator(key, log_joint, q,
num_samples, **options) -> [*batch]`, value = an estimate of the ELBO, gradient (w.r.t.
what `log_joint` and `q` close over) = the estimator's gradient of it. Notation:
f(z) = log p(x, z) - log q(z), l = q's logits, sigma the logistic sigmoid.

| estimator        | q                         | unbiased | log_joint calls | phi gradient  |
|------------------|---------------------------|----------|-----------------|---------------|
| nvil             | any                       | yes (*)  | K               | score, C(x)   |
| arm              | Independent(Bernoulli)    | yes      | 2K              | antithetic    |
| disarm           | Independent(Bernoulli)    | yes      | 2K              | ARM, u summed |
| gumbel_softmax   | Bernoulli / GroupedOneHot | no       | K (+K value)    | Concrete path |
| straight_through | Bernoulli / GroupedOneHot | no       | K               | hard+Concrete |

(*) NVIL's direction is unbiased; dividing by the running scale s >= 1 shrinks its length.

ARM and DisARM read the logits of q, so they require q to be
`distrax.Independent(distrax.Bernoulli)` (e.g. `vi_jax.families.factorised_bernoulli`)
and refuse anything else; the relaxations also accept `vi_jax.families.GroupedOneHot`.
Every estimator's theta gradient is the mean of grad_theta log p(x, z) over its samples
(at the relaxed samples for the two relaxations).

NaN and zero mass, as everywhere in vi_jax: a NaN log p(x, z) at any sample makes that
datum's value and gradient (w.r.t. q's and the model's parameters) NaN, never a plausible
number; a sample with log p(x, z) = -inf (zero mass) gives the value -inf and contributes
no gradient.

`exact_elbo` sums q(z) f(z) over every z in q's support, so `jax.grad` of it is the
exact ELBO gradient against which the estimators are graded.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vi_jax._validation import check_finite, check_positive_float
from vi_jax.estimators import _common, registry
from vi_jax.estimators.enumeration import binary_support
from vi_jax.estimators.registry import EstimatorSpec
from vi_jax.types import Array, LogJoint

sg = jax.lax.stop_gradient

MAX_EXACT_ELBO_CONFIGURATIONS = 2**16
"""Largest support `exact_elbo` enumerates (2^16 binary configurations, D <= 16)."""

ENUMERATION_RATE = 2.0e6
"""Configurations per second assumed when stating how long an enumeration would take
(about what a 2-core CPU manages for a linear 784-pixel decoder, batch 1)."""


# --------------------------------------------------------------------- q's parameters


def _bernoulli_logits(q: distrax.Distribution, estimator: str) -> Array:
    """`[*batch, D]` logits of a factorised Bernoulli q, or TypeError naming the form."""
    inner = q.distribution if isinstance(q, distrax.Independent) else None
    if (
        not isinstance(inner, distrax.Bernoulli)
        or q.reinterpreted_batch_ndims != 1
        or len(inner.batch_shape) < 1
    ):
        raise TypeError(
            f"`q` must be distrax.Independent(distrax.Bernoulli(logits [*batch, D]), 1) for "
            f"`{estimator}` (it needs q's logits; build it with "
            f"`vi_jax.families.factorised_bernoulli`), got {type(q).__name__}"
            + (f" of {type(inner).__name__}" if inner is not None else "")
            + "."
        )
    return inner.logits


def _is_grouped(q: distrax.Distribution) -> bool:
    """A `vi_jax.families.GroupedOneHot` (duck-typed: this layer imports no families)."""
    return bool(getattr(type(q), "is_discrete", False)) and hasattr(q, "num_classes")


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, jax.core.Tracer):
        return temperature
    return check_positive_float(temperature, "temperature")


def _relaxed_and_hard(
    key: Array, q: distrax.Distribution, num_samples: int, temperature, estimator: str
) -> tuple[Array, Array]:
    """Concrete samples `[K, *batch, event]` and the hard ones (exact q samples).

    The Concrete samples are differentiable in q's logits; the hard ones carry no gradient.
    """
    if _is_grouped(q):
        logits = q.logits
        gumbel = jax.random.gumbel(key, (num_samples, *logits.shape), logits.dtype)
        score = logits + gumbel
        relaxed = jax.nn.softmax(score / temperature, axis=-1)
        hard = jax.nn.one_hot(jnp.argmax(score, axis=-1), q.num_classes, dtype=logits.dtype)
        flat = (num_samples, *q.batch_shape, -1)
        return relaxed.reshape(flat), sg(hard.reshape(flat))
    try:
        logits = _bernoulli_logits(q, estimator)
    except TypeError as err:
        raise TypeError(
            f"{err} `{estimator}` also accepts a vi_jax.families.GroupedOneHot."
        ) from None
    u = jax.random.uniform(
        key, (num_samples, *logits.shape), logits.dtype, minval=jnp.finfo(logits.dtype).tiny
    )
    logistic = jnp.log(u) - jnp.log1p(-u)
    score = logits + logistic
    return jax.nn.sigmoid(score / temperature), sg((score > 0).astype(logits.dtype))


def _f(log_joint: LogJoint, q: distrax.Distribution, z: Array, num_samples: int) -> Array:
    log_p = _common.evaluate_log_joint(log_joint, z, _common.sample_shape_of(q, num_samples))
    return log_p - q.log_prob(z)


# --------------------------------------------------------------------- NVIL


class NVILState(NamedTuple):
    """Running mean and variance of NVIL's learning signal (Mnih & Gregor 2014, sec. 3.2).

    Attributes:
      mean: scalar running mean c of f - C(x).
      var: scalar running variance of f - C(x).
    """

    mean: Array
    var: Array


def nvil_init(dtype=None) -> NVILState:
    """The initial NVILState: mean 0, variance 1 (no normalisation at first)."""
    dtype = jnp.zeros((), dtype).dtype
    return NVILState(jnp.zeros((), dtype), jnp.ones((), dtype))


def nvil_update(state: NVILState, signal: Array, decay: float = 0.9) -> NVILState:
    """Updates the running moments with this batch's signal f - C(x).

    Args:
      state: current NVILState.
      signal: `[*batch]` (or `[K, *batch]`) values of f - C(x), held constant.
      decay: in [0, 1); Mnih & Gregor use 0.9 (alpha = 0.1).

    Returns:
      The new NVILState (exponential moving averages of the batch mean and variance).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"`decay` must be in [0, 1), got {decay}.")
    signal = sg(jnp.asarray(signal))
    mean = decay * state.mean + (1.0 - decay) * jnp.mean(signal)
    var = decay * state.var + (1.0 - decay) * jnp.var(signal)
    return NVILState(mean, var)


def nvil(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int = 1,
    *,
    baseline: Array | float | None = None,
    state: NVILState | None = None,
) -> Array:
    """NVIL (Mnih & Gregor 2014): the score function with a learned, input-dependent baseline.

    phi gradient: mean_k (f_k - C(x) - c) / s * grad_phi log q(z_k), with C(x) =
    `baseline` (the output of a network the model owns, evaluated on x), c the running
    mean of f - C(x) and s = max(1, running std) from `state` (update it after each step
    with `nvil_update(state, value - baseline)`). C(x) does not depend on z, so the
    direction is unbiased; s only rescales it. The baseline network learns by squared
    error: a zero-valued term adds the gradient of -1/2 mean_k (f_k - c - C(x))^2 w.r.t.
    whatever `baseline` depends on (maximising the surrogate fits C(x) to f - c).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: any variational distribution, batch `[*batch]`.
      num_samples: K >= 1 (static).
      baseline: C(x), `[*batch]` (or broadcastable), differentiable in its network's
        parameters; None is C = 0.
      state: NVILState (running moments of the signal); None is (0, 1).

    Returns:
      Surrogate `[*batch]`: value = K-sample ELBO estimate, gradient = NVIL's.
    """
    num_samples = _common.check_args(log_joint, q, num_samples)
    z = _common.draw(key, q, num_samples, stop_grad=True)
    log_p = _common.evaluate_log_joint(log_joint, z, _common.sample_shape_of(q, num_samples))
    log_q = q.log_prob(z)
    f = log_p - sg(log_q)
    if baseline is None:
        baseline = jnp.zeros(q.batch_shape, f.dtype)
    else:
        check_finite(baseline, "baseline")
        if jnp.ndim(baseline) > len(q.batch_shape):
            raise ValueError(
                f"`baseline` must broadcast to q.batch_shape {q.batch_shape}, got shape "
                f"{jnp.shape(baseline)}."
            )
    state = nvil_init(f.dtype) if state is None else state
    centred = sg(f) - sg(state.mean)  # [K, *batch]
    scale = jnp.maximum(1.0, jnp.sqrt(sg(state.var)))
    signal = (centred - sg(baseline)) / scale
    # A zero-mass sample (f = -inf) says nothing about C(x): it is left out of the fit
    # (else the value would be -inf - -inf = NaN); a NaN f stays NaN.
    residual = jnp.where(jnp.isinf(centred), 0.0, centred - baseline)
    fit = -0.5 * jnp.mean(residual**2, axis=0)
    value = jnp.mean(_common.finite_or_const(f) + _common.score_term(log_q, signal, f), axis=0)
    out = value + fit - sg(fit)
    return _common.nan_out(out, f)


# --------------------------------------------------------------------- ARM / DisARM


def _antithetic_pair(
    key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int, name: str
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """u, b = 1[u < sigma(l)], b~ = 1[u > sigma(-l)], f(b), f(b~), and the logits."""
    num_samples = _common.check_args(log_joint, q, num_samples)
    logits = _bernoulli_logits(q, name)
    u = jax.random.uniform(key, (num_samples, *logits.shape), logits.dtype)
    lg = sg(logits)
    b = (u < jax.nn.sigmoid(lg)).astype(logits.dtype)
    b_anti = (u > jax.nn.sigmoid(-lg)).astype(logits.dtype)
    z = jnp.concatenate([b, b_anti], axis=0)
    log_p = _common.evaluate_log_joint(log_joint, z, _common.sample_shape_of(q, 2 * num_samples))
    f = log_p - sg(q.log_prob(z))  # theta-differentiable; phi enters via the logits term
    return u, b, b_anti, f[:num_samples], f[num_samples:], logits


def _logit_surrogate(f1: Array, f2: Array, grad_logits: Array, logits: Array) -> Array:
    """Value mean(f1, f2); gradient: theta via f, phi via sum_d g_d * logits_d.

    A pair with an infinite f (zero mass; inf - inf is NaN there) contributes no logit
    gradient; a NaN f makes the datum's value and gradient NaN.
    """
    finite = jnp.isfinite(f1) & jnp.isfinite(f2)  # [K, *batch]
    g = sg(jnp.mean(jnp.where(finite[..., None], grad_logits, 0.0), axis=0))
    phi = jnp.sum(g * (logits - sg(logits)), axis=-1)
    out = 0.5 * sum(jnp.mean(_common.finite_or_const(f), axis=0) for f in (f1, f2))
    return _common.nan_out(out + phi, f1, f2)


def arm(key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int = 1) -> Array:
    """ARM, the augment-REINFORCE-merge estimator (Yin & Zhou 2019), for Bernoulli q.

    With u ~ U(0, 1)^D, b = 1[u < sigma(l)] and its antithetic b~ = 1[u > sigma(-l)]
    (both ~ q), the logit gradient is g = (f(b~) - f(b)) (u - 1/2), averaged over K
    independent pairs: unbiased, 2K evaluations of `log_joint`. The direct term
    E_q[grad_phi f] = -E_q[grad log q] = 0 is dropped.

    Args:
      key: PRNG key.
      log_joint: `z [2K, *batch, D] -> log p(x, z) [2K, *batch]`.
      q: `distrax.Independent(distrax.Bernoulli(logits [*batch, D]), 1)`.
      num_samples: K >= 1 antithetic pairs (static).

    Returns:
      Surrogate `[*batch]`: value = 2K-sample ELBO estimate, gradient = ARM's.
    """
    u, _, _, f1, f2, logits = _antithetic_pair(key, log_joint, q, num_samples, "arm")
    grad_logits = sg(f2 - f1)[..., None] * (u - 0.5)
    return _logit_surrogate(f1, f2, grad_logits, logits)


def disarm(key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int = 1) -> Array:
    """DisARM (Dong, Mnih & Tucker 2020): ARM with the augmenting uniforms integrated out.

    Same antithetic pair (b, b~) as `arm`; the logit gradient is
    g = 1/2 (f(b) - f(b~)) (-1)^{b~} 1[b != b~] sigma(abs(l)): zero wherever the pair agrees,
    unbiased, and its variance is never above ARM's (Rao-Blackwellisation).

    Args:
      key: PRNG key.
      log_joint: `z [2K, *batch, D] -> log p(x, z) [2K, *batch]`.
      q: `distrax.Independent(distrax.Bernoulli(logits [*batch, D]), 1)`.
      num_samples: K >= 1 antithetic pairs (static).

    Returns:
      Surrogate `[*batch]`: value = 2K-sample ELBO estimate, gradient = DisARM's.
    """
    _, b, b_anti, f1, f2, logits = _antithetic_pair(key, log_joint, q, num_samples, "disarm")
    sign = 1.0 - 2.0 * b_anti
    differ = (b != b_anti).astype(logits.dtype)
    weight = sign * differ * jax.nn.sigmoid(jnp.abs(sg(logits)))
    grad_logits = 0.5 * sg(f1 - f2)[..., None] * weight
    return _logit_surrogate(f1, f2, grad_logits, logits)


# --------------------------------------------------------------------- relaxations


def gumbel_softmax(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int = 1,
    *,
    temperature: float = 1.0,
) -> Array:
    """Concrete / Gumbel-softmax relaxation (Maddison et al. 2017; Jang et al. 2017). BIASED.

    z~ = sigmoid((l + logistic noise) / tau) (Bernoulli q) or softmax((l + Gumbel) / tau)
    per group (`GroupedOneHot`); the gradient is the pathwise gradient of
    mean_k [log p(x, z~_k) - log q(z~_k)], with q's discrete log-probability evaluated at
    the relaxed point. That is the exact gradient of a *different* (smoothed) objective,
    so it is biased for the ELBO; the bias shrinks and the variance grows as tau -> 0
    (measured in tests/estimators/test_discrete.py and the `discrete_estimators`
    benchmark). `log_joint` must accept relaxed z in [0, 1] (a Bernoulli prior and a
    network decoder do). The value is the unbiased ELBO estimate at the hard samples
    H(l + noise) (K more evaluations, no gradient).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`, z relaxed in [0, 1].
      q: `Independent(Bernoulli)` or `vi_jax.families.GroupedOneHot`.
      num_samples: K >= 1 (static).
      temperature: tau > 0.

    Returns:
      Surrogate `[*batch]`: value = K-sample ELBO estimate at hard samples, gradient =
      the relaxed pathwise gradient.
    """
    temperature = _check_temperature(temperature)
    num_samples = _common.check_args(log_joint, q, num_samples)
    relaxed, hard = _relaxed_and_hard(key, q, num_samples, temperature, "gumbel_softmax")
    f_relaxed = _f(log_joint, q, relaxed, num_samples)
    f_hard = _f(log_joint, q, hard, num_samples)
    # Zero-valued per sample; an infinite relaxed f gives no gradient (not inf - inf = NaN).
    path = jnp.where(jnp.isinf(f_relaxed), 0.0, f_relaxed - sg(f_relaxed))
    return _common.nan_out(sg(jnp.mean(f_hard, axis=0)) + jnp.mean(path, axis=0), f_relaxed, f_hard)


def straight_through(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int = 1,
    *,
    temperature: float = 1.0,
) -> Array:
    """Straight-through Gumbel-softmax (Jang et al. 2017, sec. 2.2). BIASED at every tau.

    The forward pass uses the hard sample z = H(l + noise) (an exact sample of q, so the
    value is the unbiased ELBO estimate), the backward pass the Concrete sample's
    Jacobian: z = hard + (z~ - stop_gradient(z~)). The gradient of f is taken at the hard
    point along the relaxed path, which is not the gradient of any objective; its bias
    does not vanish as tau -> 0 (measured in the `discrete_estimators` benchmark).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: `Independent(Bernoulli)` or `vi_jax.families.GroupedOneHot`.
      num_samples: K >= 1 (static).
      temperature: tau > 0 of the backward relaxation.

    Returns:
      Surrogate `[*batch]`: value = K-sample ELBO estimate, gradient = straight-through.
    """
    temperature = _check_temperature(temperature)
    num_samples = _common.check_args(log_joint, q, num_samples)
    relaxed, hard = _relaxed_and_hard(key, q, num_samples, temperature, "straight_through")
    z = hard + (relaxed - sg(relaxed))  # value exactly `hard`
    f = _f(log_joint, q, z, num_samples)
    return _common.nan_out(jnp.mean(_common.finite_or_const(f), axis=0), f)


# --------------------------------------------------------------------- exact answers


def _support(q: distrax.Distribution) -> Array:
    """Every point of a discrete q's support, `[n, *event]`, or a clear error."""
    if _is_grouped(q):
        n = q.num_classes**q.num_groups
        _check_size(n, f"{q.num_classes}^{q.num_groups}")
        eye = np.eye(q.num_classes)
        rows = [
            np.concatenate([eye[c] for c in combo])
            for combo in itertools.product(range(q.num_classes), repeat=q.num_groups)
        ]
        return jnp.asarray(np.stack(rows), q.dtype)
    logits = _bernoulli_logits(q, "exact_elbo")
    d = logits.shape[-1]
    _check_size(2**d, f"2^{d}")
    return binary_support(d, dtype=logits.dtype)


def _check_size(n: int, text: str) -> None:
    if n > MAX_EXACT_ELBO_CONFIGURATIONS:
        seconds = n / ENUMERATION_RATE
        raise ValueError(
            f"q's support has {text} = {n:.4g} configurations, more than the "
            f"{MAX_EXACT_ELBO_CONFIGURATIONS} (2^{int(math.log2(MAX_EXACT_ELBO_CONFIGURATIONS))}) "
            f"that `exact_elbo` enumerates; at ~{ENUMERATION_RATE:.0e} configurations/s it "
            f"would take ~{seconds:.3g} s per data point (and its gradient as much memory). "
            "Use `enumerate_binary_log_marginal` (chunked, D <= 30) for log p(x)."
        )


def exact_elbo(log_joint: LogJoint, q: distrax.Distribution) -> Array:
    """The exact ELBO sum_z q(z) [log p(x, z) - log q(z)] over q's whole support.

    Differentiable: `jax.grad` of it is the exact ELBO gradient w.r.t. q's and the
    model's parameters, the truth against which the discrete estimators are graded.

    Args:
      log_joint: `z [n, *batch, *event] -> log p(x, z) [n, *batch]`.
      q: `Independent(Bernoulli)` with D <= 16, or a `GroupedOneHot` with C^G <= 2^16.

    Returns:
      `[*batch]` ELBO; -inf where q puts mass on a z of zero joint probability.
    """
    _common.check_args(log_joint, q, 1)
    support = _support(q)
    n, event = support.shape[0], support.shape[1:]
    batch = tuple(q.batch_shape)
    z = jnp.broadcast_to(support.reshape(n, *(1,) * len(batch), *event), (n, *batch, *event))
    log_p = _common.evaluate_log_joint(log_joint, z, (n, *batch))
    log_q = q.log_prob(z)
    prob = jnp.exp(log_q)
    return jnp.sum(jnp.where(prob > 0, prob * (log_p - log_q), 0.0), axis=0)


_SPECS = (
    EstimatorSpec(
        "elbo",
        "nvil",
        nvil,
        needs_reparam=False,
        discrete_ok=True,
        options=("baseline", "state"),
        summary="NVIL: learned input-dependent baseline, normalised signal",
    ),
    EstimatorSpec(
        "elbo",
        "arm",
        arm,
        needs_reparam=False,
        discrete_ok=True,
        summary="ARM antithetic estimator (Bernoulli q; 2K evaluations)",
    ),
    EstimatorSpec(
        "elbo",
        "disarm",
        disarm,
        needs_reparam=False,
        discrete_ok=True,
        summary="DisARM, ARM Rao-Blackwellised (Bernoulli q; 2K evaluations)",
    ),
    EstimatorSpec(
        "elbo",
        "gumbel_softmax",
        gumbel_softmax,
        needs_reparam=False,
        discrete_ok=True,
        options=("temperature",),
        summary="Concrete / Gumbel-softmax relaxation (biased)",
    ),
    EstimatorSpec(
        "elbo",
        "straight_through",
        straight_through,
        needs_reparam=False,
        discrete_ok=True,
        options=("temperature",),
        summary="straight-through Gumbel-softmax (biased)",
    ),
)
for _spec in _SPECS:
    registry.register(_spec)
