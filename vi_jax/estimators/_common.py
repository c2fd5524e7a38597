"""Shared plumbing for bounds and gradient estimators: argument checks and log-weights."""

from __future__ import annotations

import typing

import distrax
import jax
import jax.numpy as jnp

from vi_jax._validation import check_callable, check_positive_int

# log mean exp over samples, -inf (not NaN, with zero gradient) for all-zero weights.
from vi_jax.estimators.weights import _log_mean_exp as log_mean_exp  # noqa: F401
from vi_jax.types import Array, LogJoint

# Distributions whose samples carry no pathwise gradient in distrax.
_NOT_REPARAMETERIZED = (
    distrax.Bernoulli,
    distrax.Categorical,
    distrax.OneHotCategorical,
    distrax.MixtureSameFamily,
    distrax.MixtureOfTwo,
    distrax.Softmax,
    distrax.EpsilonGreedy,
    distrax.Greedy,
    distrax.Deterministic,
)


def is_reparameterized(dist: distrax.Distribution) -> bool:
    """Whether `dist.sample` is differentiable w.r.t. the distribution's parameters.

    Independent and Transformed wrappers inherit the answer of the wrapped distribution;
    discrete and mixture distributions are not reparameterised; continuous ones are.
    """
    if isinstance(dist, distrax.Independent | distrax.Transformed):
        return is_reparameterized(dist.distribution)
    if getattr(type(dist), "is_discrete", False):  # e.g. vi_jax.families.GroupedOneHot
        return False
    if not isinstance(dist, distrax.Distribution):  # a TFP distribution says it itself
        return "FULLY_REPARAMETERIZED" in str(getattr(dist, "reparameterization_type", ""))
    if isinstance(dist, _NOT_REPARAMETERIZED):
        return False
    return bool(jnp.issubdtype(dist.dtype, jnp.floating))


def check_args(log_joint: LogJoint, q: distrax.Distribution, num_samples: int) -> int:
    """Validates the common estimator arguments; returns `num_samples` as an int."""
    check_callable(log_joint, "log_joint")
    if not isinstance(q, typing.get_args(distrax.DistributionLike)):
        raise TypeError(
            f"`q` must be a distrax distribution (or a TFP distribution), got {type(q).__name__}."
        )
    return check_positive_int(num_samples, "num_samples")


def discrete_capable() -> list[str]:
    """`"objective/name"` of every registered estimator with `discrete_ok=True`."""
    from vi_jax.estimators import registry  # at call time: all modules have registered

    return [s.key for s in registry.estimators() if s.discrete_ok]


def require_reparameterized(q: distrax.Distribution, estimator: str) -> None:
    """Raises TypeError if `q` has no reparameterised sampler, naming the alternatives."""
    if not is_reparameterized(q):
        inner = q.distribution if isinstance(q, distrax.Independent) else q
        raise TypeError(
            f"`q` ({type(q).__name__} of {type(inner).__name__}) is not reparameterisable "
            f"(discrete or mixture), but `{estimator}` needs pathwise gradients through its "
            "samples. Use an estimator that works with a discrete q: "
            f"{', '.join(discrete_capable())}."
        )


def log_prob_path_only(q: distrax.Distribution, z: Array, log_q: Array | None = None) -> Array:
    """Log q(z) whose gradient flows only along the sample path z, not to q's parameters.

    Value: log q(z). Gradient: (d log q / d z) . dz, with q's parameters held constant,
    i.e. the "sticking the landing" term. It is built from the z-gradient instead of a
    stop-gradient copy of `q`, because distrax distributions keep derived parameter
    arrays (e.g. in bijectors) that a `tree_map(stop_gradient, q)` does not reach.
    Requires log q(z)[k, b] to depend only on z[k, b] (true for any distribution's
    batched log_prob).

    Flows: d log q / d z is the z-gradient of log q(z) = log N(T^-1(z)) + log|det dT^-1/dz|
    evaluated through the inverse flow, which is exact for coupling flows (one pass) and
    for IAF (D sequential passes per step, an exact fixed point, see `vi_jax.families.iaf`),
    so the construction is the STL term for any invertible q, at the cost of one inverse
    pass and its backward pass. `log_q`, the value from the sampling pass when the caller
    has it, saves the inverse for the value (not for the gradient).
    """
    if log_q is None:
        log_q = q.log_prob(z)
    dlogq_dz = jax.grad(lambda zz: jnp.sum(q.log_prob(zz)))(jax.lax.stop_gradient(z))
    dlogq_dz = jax.lax.stop_gradient(dlogq_dz)
    path = jnp.sum(
        (dlogq_dz * (z - jax.lax.stop_gradient(z))).reshape(log_q.shape + (-1,)), axis=-1
    )
    return jax.lax.stop_gradient(log_q) + path


def draw_and_log_prob(key: Array, q: distrax.Distribution, num_samples: int) -> tuple[Array, Array]:
    """Samples `[num_samples, *batch, *event]` and their log q `[num_samples, *batch]` in one pass.

    For a Gaussian this equals `q.log_prob(q.sample(...))` (same function of the
    parameters); for a flow it avoids inverting the flow.
    """
    return q.sample_and_log_prob(seed=key, sample_shape=(num_samples,))


def evaluate_log_joint(log_joint: LogJoint, z: Array, expected_shape: tuple[int, ...]) -> Array:
    """Calls `log_joint(z)` and checks that it returns one value per sample and datum."""
    value = log_joint(z)
    if tuple(jnp.shape(value)) != tuple(expected_shape):
        raise ValueError(
            f"`log_joint` must map z of shape {tuple(z.shape)} to log p(x, z) of shape "
            f"{tuple(expected_shape)} ([num_samples, *batch]), got {jnp.shape(value)}."
        )
    return value


def draw(
    key: Array, q: distrax.Distribution, num_samples: int, *, stop_grad: bool = False
) -> Array:
    """Samples `[num_samples, *batch, *event]` from q, optionally with the path cut."""
    z = q.sample(seed=key, sample_shape=(num_samples,))
    return jax.lax.stop_gradient(z) if stop_grad else z


def sample_shape_of(q: distrax.Distribution, num_samples: int) -> tuple[int, ...]:
    """`(num_samples, *q.batch_shape)`: the shape of log-weights."""
    return (num_samples, *q.batch_shape)


def snis_weights(log_w: Array, axis: int = 0) -> Array:
    """Self-normalised weights over `axis`; 0 for an all -inf row, NaN if any entry is NaN."""
    m = jnp.max(log_w, axis=axis, keepdims=True)
    empty = jnp.isneginf(m)
    e = jnp.exp(log_w - jnp.where(empty, 0.0, m))
    return jnp.where(empty, 0.0, e / jnp.sum(e, axis=axis, keepdims=True))


def weighted_sum(weights: Array, values: Array, axis: int = 0) -> Array:
    """Sum over `axis` of weights * values, reading 0 * (-inf) as 0; NaN stays NaN."""
    return jnp.sum(jnp.where(weights == 0, 0.0, weights * values), axis=axis)
