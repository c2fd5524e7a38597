"""Shared plumbing for bounds and gradient estimators: argument checks and log-weights."""

from __future__ import annotations

import typing

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vi_jax._validation import check_callable, check_not_nan, check_positive_int, is_concrete
from vi_jax.estimators import _logspace
from vi_jax.types import Array, LogJoint

# Attributes that hold a scale (a standard deviation or its diagonal) in distrax.
_SCALE_ATTRIBUTES = ("scale", "scale_diag", "scale_tri")

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


def _scales(dist: distrax.Distribution) -> list[tuple[str, Array]]:
    """The concrete scale parameters of `dist` and of the distributions it wraps."""
    found = []
    while dist is not None:
        for attr in _SCALE_ATTRIBUTES:
            try:
                value = getattr(dist, attr, None)
            except Exception:  # a property that cannot be computed: nothing to check
                value = None
            if value is None or not hasattr(value, "dtype") or not is_concrete(value):
                continue
            arr = np.asarray(value)
            if attr == "scale_tri":
                arr = np.diagonal(arr, axis1=-2, axis2=-1)
            found.append((attr, arr))
        dist = getattr(dist, "distribution", None)  # Independent, Transformed
    return found


def check_distribution(q: distrax.Distribution, name: str = "q") -> None:
    """Checks a variational distribution / proposal `name`.

    Refuses a non-distribution, concrete NaN parameters and zero (or negative) scales,
    which would otherwise give NaN or -inf silently.

    Traced parameters (inside jit/vmap/grad) pass unchecked.
    """
    if not isinstance(q, typing.get_args(distrax.DistributionLike)):
        raise TypeError(
            f"`{name}` must be a distrax distribution (or a TFP distribution), got "
            f"{type(q).__name__}."
        )
    for leaf in jax.tree_util.tree_leaves(q):  # its parameters (concrete ones only)
        if hasattr(leaf, "dtype"):
            check_not_nan(leaf, f"{name} (a parameter)")
    for attr, arr in _scales(q):
        if np.issubdtype(arr.dtype, np.floating) and np.any(arr <= 0):
            raise ValueError(
                f"`{name}` has a zero or negative `{attr}` ({int(np.sum(arr <= 0))} entries): "
                "a degenerate distribution whose log-density is infinite. Floor the scale "
                "(e.g. softplus(raw) + 1e-4)."
            )


def check_args(log_joint: LogJoint, q: distrax.Distribution, num_samples: int) -> int:
    """Validates the common estimator arguments; returns `num_samples` as an int."""
    check_callable(log_joint, "log_joint")
    check_distribution(q, "q")
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


def sample_and_weigh(
    key: Array,
    log_joint: LogJoint,
    q: distrax.Distribution,
    num_samples: int,
    *,
    stop_grad: bool = False,
    reparameterized_for: str | None = None,
) -> tuple[Array, Array]:
    """The sample-then-weigh preamble: validated args, z ~ q, log p(x, z).

    Args:
      key: PRNG key.
      log_joint: `z [K, *batch, *event] -> log p(x, z) [K, *batch]`.
      q: distribution with batch `[*batch]`.
      num_samples: K >= 1 (static).
      stop_grad: cut the sample path (score-function estimators).
      reparameterized_for: the name of an estimator that needs a reparameterised q
        (refused otherwise, naming it), or None.

    Returns:
      `(z [K, *batch, *event], log_p [K, *batch])`.
    """
    num_samples = check_args(log_joint, q, num_samples)
    if reparameterized_for is not None:
        require_reparameterized(q, reparameterized_for)
    z = draw(key, q, num_samples, stop_grad=stop_grad)
    return z, evaluate_log_joint(log_joint, z, sample_shape_of(q, num_samples))


def sample_log_weights(
    key: Array, log_joint: LogJoint, q: distrax.Distribution, num_samples: int
) -> tuple[Array, Array]:
    """Samples z ~ q, with log w = log p(x, z) - log q(z) (`q.sample_and_log_prob`).

    Returns:
      `(z [K, *batch, *event], log_w [K, *batch])`.
    """
    z, log_q = q.sample_and_log_prob(seed=key, sample_shape=(num_samples,))
    return z, evaluate_log_joint(log_joint, z, log_q.shape) - log_q


def snis_weights(log_w: Array, axis: int = 0) -> Array:
    """Self-normalised weights over `axis`; 0 for an all -inf row, NaN if any entry is NaN."""
    moved = jnp.moveaxis(log_w, axis, 0)
    return jnp.moveaxis(_logspace.normalized_weights(moved, zero_mass=0.0), 0, axis)


# The log-mean-exp kernel (NaN-propagating, -inf for zero mass) under its short name.
log_mean_exp = _logspace.log_mean_exp_nan_aware


def weighted_sum(weights: Array, values: Array, axis: int = 0) -> Array:
    """Sum over `axis` of weights * values, reading 0 * (-inf) as 0; NaN stays NaN."""
    return jnp.sum(jnp.where(weights == 0, 0.0, weights * values), axis=axis)


def score_term(log_q: Array, signal: Array, log_w: Array | None = None) -> Array:
    """Zero-valued term whose gradient is signal * grad log q (signal held constant).

    An infinite signal (from a sample of zero weight, log w = -inf, or a baseline built
    from one; inf - inf gives NaN there too) contributes no gradient rather than NaN.
    A NaN log-weight `log_w [K, *batch]` of the datum is not a zero weight: it makes
    the term, and so its gradient, NaN.
    """
    signal = jax.lax.stop_gradient(signal)
    clean = jnp.where(jnp.isfinite(signal), signal, 0.0)
    if log_w is None:  # the caller propagates NaN log-weights itself
        return clean * (log_q - jax.lax.stop_gradient(log_q))
    nan_in = _logspace.any_nan(log_w, axis=0)
    return jnp.where(nan_in, jnp.nan, 1.0) * clean * (log_q - jax.lax.stop_gradient(log_q))


def nan_out(surrogate: Array, *signals: Array) -> Array:
    """`surrogate [*batch]` made NaN, value and gradient, for a datum with a NaN f.

    A NaN log p(x, z) is not a zero weight: without this the phi gradient of a datum whose
    f is NaN could come out finite (a NaN that entered as a constant has no derivative),
    a plausible number. NaN * d(surrogate) is NaN even where d(surrogate) is 0.
    """
    nan_in = jnp.zeros(surrogate.shape, bool)
    for f in signals:
        nan_in = nan_in | _logspace.any_nan(f, axis=0)
    # A constant factor (1 or NaN), not a `where` over `surrogate * nan`, whose cotangent
    # 0 * NaN would poison the gradient of every other datum too.
    return surrogate * jnp.where(nan_in, jnp.nan, 1.0).astype(surrogate.dtype)


def finite_or_const(x: Array) -> Array:
    """x, but held constant where it is infinite (a zero-mass sample gives no gradient)."""
    return jnp.where(jnp.isinf(x), jax.lax.stop_gradient(x), x)
