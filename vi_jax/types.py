"""The contracts of vi_jax, declared once: every other module imports them from here.

Shape conventions (used in every docstring of the library):

- `K` samples, `*batch` data points, `*event` latent dimensions: latents `z` have shape
  `[K, *batch, *event]`; a log-joint, a bound or a surrogate has shape `[K, *batch]` or
  `[*batch]`.
- Anything random takes a `key` (a `jax.random.key` or a legacy uint32 PRNGKey) first.

This module imports only the standard library, jax, chex and distrax, so that every
layer (including `vi_jax.estimators`, which imports no Flax or optax) can use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol, TypeAlias

import chex
import distrax

Array: TypeAlias = chex.Array
"""A JAX (or NumPy) array; `jax.Array` inside compiled code."""

PRNGKey: TypeAlias = chex.PRNGKey
"""A random key: `jax.random.key(seed)` or a legacy `jax.random.PRNGKey(seed)`."""

PyTree = Any
"""A nested structure of arrays (dicts, lists, tuples, NamedTuples, `nnx.State`)."""

LogJoint = Callable[[Array], Array]
"""`log_joint(z [K, *batch, *event]) -> log p(x, z) [K, *batch]`.

Element `[k, b]` must depend only on `z[k, b]` (no coupling across samples or data
points), so that estimators may vmap, chunk and differentiate it per sample.
"""


class Estimator(Protocol):
    """A gradient estimator, as a surrogate objective.

    `estimator(key, log_joint, q, num_samples, **options) -> [*batch]`: the *value* is an
    estimate of the bound the estimator targets (ELBO, IWAE L_K, ...), one per data point;
    the *gradient*, w.r.t. whatever `log_joint` (model parameters theta) and `q`
    (variational parameters phi) close over, is the estimator's gradient of that bound.
    A trainer minimises `-surrogate.mean()`. `q` is a distrax distribution with batch
    shape `[*batch]`; `num_samples` K is a static Python int.
    """

    def __call__(
        self,
        key: PRNGKey,
        log_joint: LogJoint,
        q: distrax.Distribution,
        num_samples: int,
        /,
        **options: Any,
    ) -> Array:
        """Returns the surrogate `[*batch]`."""
        ...


class ModelView(NamedTuple):
    """What inference and evaluation need of a model for a batch x `[B, data]`.

    The one bridge from a model (e.g. a Flax VAE) to the estimator contract: the loss,
    evaluation, gaps, per-datapoint SVI and refinement all take a model through it.

    Attributes:
      log_joint: `z [K, B, latent] -> log p(x, z) [K, B]`.
      posterior: q(z | x), batch `[B]`, event `[latent]` (the encoder's, if amortised).
      log_likelihood: `z [K, B, latent] -> log p(x | z) [K, B]`.
      prior: p(z), event `[latent]`.
      simulate: optional `simulate(key, num) -> (z [num, latent], x [num, data])`, draws
        from the model's joint p(z) p(x | z) (for sleep-phi updates and BDMC); None when
        the model cannot simulate.
    """

    log_joint: LogJoint
    posterior: distrax.Distribution
    log_likelihood: LogJoint
    prior: distrax.Distribution
    simulate: Callable[[PRNGKey, int], tuple[Array, Array]] | None = None


ModelFn = Callable[[PyTree, Array], ModelView]
"""`model_fn(params, x [B, data]) -> ModelView` (jit-able; e.g. `vi_jax.models.vae_view`)."""

Metrics = Mapping[str, Array]
"""Scalar diagnostics of one step, by name."""

LossFn = Callable[..., tuple[Array, Metrics]]
"""`loss_fn(params, batch, key[, step]) -> (scalar loss, metrics)`."""

TrainStep = Callable[[PyTree, PyTree, PRNGKey], tuple[PyTree, Metrics]]
"""`train_step(state, batch, key) -> (new state, metrics)`, pure and jit-able."""


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss that declares its calling convention; calling it calls `fn`.

    `make_train_step` reads `takes_step` to know whether to pass the optimiser step.

    Attributes:
      fn: `fn(params, batch, key) -> (scalar loss, metrics)`, or, when `takes_step`,
        `fn(params, batch, key, step)` with `step` the int32 scalar `TrainState.step`
        (e.g. for a KL warm-up).
      takes_step: Whether `fn` takes the step as a fourth argument.
    """

    fn: LossFn
    takes_step: bool = False

    def __call__(self, *args: Any) -> tuple[Array, Metrics]:
        """`fn(params, batch, key[, step])`."""
        return self.fn(*args)


@dataclasses.dataclass(frozen=True)
class GuardedStep:
    """A `TrainStep` that itself leaves the state unchanged (bit for bit) when not finite.

    `make_train_step` returns one; a compiled epoch then adds no guard of its own (any
    other step gets a select that discards its state at a non-finite step).

    Attributes:
      fn: `fn(state, batch, key) -> (state, metrics)` whose `metrics["finite"]` (bool `[]`)
        is False exactly when it returned its input state.
      unchecked: optionally, the same update without the per-step check: it always applies
        its update, its `metrics["finite"]` says only whether the loss is finite, and its
        metrics may lack the ones the check computes (e.g. `"grad_norm"`). A compiled
        epoch with `check="epoch"` runs it and, if a loss or the epoch's final state is not
        finite, runs the epoch again with `fn` (see `make_epoch_fn`).
    """

    fn: TrainStep
    unchecked: TrainStep | None = None

    def __call__(self, state: PyTree, batch: PyTree, key: PRNGKey) -> tuple[PyTree, Metrics]:
        """`fn(state, batch, key)`."""
        return self.fn(state, batch, key)


__all__ = [
    "Array",
    "Estimator",
    "GuardedStep",
    "LogJoint",
    "Loss",
    "LossFn",
    "Metrics",
    "ModelFn",
    "ModelView",
    "PRNGKey",
    "PyTree",
    "TrainStep",
]
