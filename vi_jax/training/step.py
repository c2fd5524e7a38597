"""One optimisation step for any loss: `train_step(state, batch, key) -> (state, metrics)`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vi_jax._validation import check_callable, check_choice
from vi_jax.training.state import TrainState
from vi_jax.types import Array, GuardedStep, Loss, LossFn, PyTree

Metrics = dict[str, Array]

# Metric names the step itself writes; a loss's aux may not reuse them.
RESERVED_METRICS = ("loss", "grad_norm", "finite")

GUARDS = ("auto", "cond", "select")


def tree_select(pred: Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise `jnp.where(pred, on_true, on_false)` over two pytrees of one structure.

    No predicate travels to the host, but both trees are computed and read; see
    `apply_if` for when a `lax.cond` is cheaper.

    Args:
      pred: A boolean scalar `[]`.
      on_true: A pytree of arrays.
      on_false: A pytree with the same structure, shapes and dtypes as `on_true`.

    Returns:
      `on_true` where `pred` holds, `on_false` otherwise.
    """
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def apply_if(pred: Array, fn: Callable[[PyTree], PyTree], state: PyTree, guard: str = "auto"):
    """`fn(state)` where `pred` holds, else `state` unchanged (bit for bit).

    Two lowerings with the same result. `"select"` computes `fn(state)` always and keeps it
    with a leafwise `jnp.where`: no predicate travels to the host, which is what an
    accelerator wants. On a CPU that select is an extra pass over every buffer of the
    state, and it keeps the old buffers alive so nothing is updated in place: it cost 10%
    of a VAE epoch (`benchmarks/training_speed.py`, 2-core CPU). `"cond"` uses `lax.cond`,
    which on a CPU is a plain branch and lets `fn` update in place. `"auto"` picks `"cond"`
    when JAX's default backend is the CPU and `"select"` otherwise.

    Args:
      pred: A boolean scalar `[]`.
      fn: `fn(state) -> new_state`, a new state of the same structure, shapes and dtypes.
      state: A pytree of arrays.
      guard: `"auto"`, `"cond"` or `"select"`.

    Returns:
      `fn(state)` where `pred` holds, `state` otherwise.
    """
    if guard == "auto":
        guard = "cond" if jax.default_backend() == "cpu" else "select"
    if guard == "cond":
        return jax.lax.cond(pred, fn, lambda s: s, state)
    if guard == "select":
        return tree_select(pred, fn(state), state)
    raise ValueError(f"`guard` must be one of {GUARDS}, got {guard!r}.")


def _check_loss_output(out: Any) -> tuple[Array, Mapping[str, Array]]:
    """Checks (at trace time) that a loss returned `(scalar loss, dict of scalars)`."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            "`loss_fn` must return a pair `(loss, aux)` with `aux` a dict of scalar arrays, "
            f"got {type(out).__name__}."
        )
    loss, aux = out
    if jnp.ndim(loss) != 0:
        raise ValueError(f"`loss_fn` must return a scalar loss, got shape {jnp.shape(loss)}.")
    if aux is None:
        aux = {}
    if not isinstance(aux, Mapping):
        raise TypeError(
            f"`loss_fn`'s aux must be a dict of scalar arrays, got {type(aux).__name__}."
        )
    for name, value in aux.items():
        if name in RESERVED_METRICS:
            raise ValueError(
                f"`loss_fn`'s aux may not use the reserved metric name {name!r} "
                f"(reserved: {', '.join(RESERVED_METRICS)})."
            )
        if jnp.ndim(value) != 0:
            raise ValueError(
                f"`loss_fn`'s aux entry {name!r} must be a scalar, got shape {jnp.shape(value)}."
            )
    return loss, aux


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    with_step: bool | None = None,
    guard: str = "auto",
) -> GuardedStep:
    """Builds a pure, jit-able optimisation step for any loss on any parameter pytree.

    The step differentiates `loss_fn` w.r.t. `state.params`, applies `optimizer`, and
    increments `state.step`. If the loss or the global gradient norm is not finite the
    update is discarded: the returned state equals the input state (bit for bit) and
    `metrics["finite"]` is False, so that the caller can stop with the last good state.
    Only the loss and the gradient are checked; an optimiser that creates NaN from finite
    gradients is not caught.

    Args:
      loss_fn: `loss_fn(params, batch, key) -> (loss, aux)`, or with `with_step=True`
        (or a `Loss` with `takes_step`) `loss_fn(params, batch, key, step)` where
        `step` is `state.step` (an int32 scalar, e.g. for a KL warm-up). `loss` is a
        scalar `[]` to minimise; `aux` is a dict of scalar arrays (or None) reported
        as metrics; it may not use the names "loss", "grad_norm" or "finite".
      optimizer: an optax gradient transformation (its `update` receives the params).
      with_step: whether to pass `state.step` to `loss_fn` as a fourth argument. None
        (default): `loss_fn.takes_step` for a `Loss` (e.g. from `make_vae_loss`),
        False otherwise.
      guard: how the update is skipped on a non-finite step, `"auto"` (default),
        `"cond"` or `"select"`; the result is the same, only the speed differs (see
        `apply_if`).

    Returns:
      `train_step(state, batch, key) -> (state, metrics)` with `state` a `TrainState`,
      `batch` any pytree `loss_fn` accepts, `key` a PRNG key, and `metrics` a dict of
      scalars `{"loss", **aux, "grad_norm", "finite"}` (`finite` is a bool `[]`); a
      `GuardedStep`, so `make_epoch_fn` adds no guard of its own. Its `unchecked`
      attribute is the same step without the gradient norm and the skip (metrics
      `{"loss", **aux, "finite"}`, `finite` from the loss alone), which a compiled epoch
      with `check="epoch"` (the default) runs, checking the state once per epoch and
      running the epoch again with the checked step if anything was not finite.

    Raises:
      TypeError: if `loss_fn` is not callable or `optimizer` is not an optax
        transformation (at once), or if `loss_fn` returns the wrong types (at trace
        time).
      ValueError: if `guard` is not one of "auto", "cond", "select", or `with_step`
        contradicts a `Loss`'s `takes_step`.
    """
    check_callable(loss_fn, "loss_fn")
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            f"`optimizer` must be an optax GradientTransformation, got {type(optimizer).__name__}."
        )
    declared = loss_fn.takes_step if isinstance(loss_fn, Loss) else None
    if with_step is None:
        with_step = bool(declared)
    elif not isinstance(with_step, bool):
        raise TypeError(f"`with_step` must be a bool, got {type(with_step).__name__}.")
    elif declared is not None and with_step != declared:
        raise ValueError(
            f"`with_step={with_step}` contradicts the `Loss` `loss_fn`, whose "
            f"`takes_step` is {declared}; leave `with_step` out."
        )
    check_choice(guard, GUARDS, "guard")

    def value_and_grad(state: TrainState, batch: PyTree, key: Array):
        def objective(params: PyTree) -> tuple[Array, Mapping[str, Array]]:
            out = (
                loss_fn(params, batch, key, state.step)
                if with_step
                else loss_fn(params, batch, key)
            )
            return _check_loss_output(out)

        return jax.value_and_grad(objective, has_aux=True)(state.params)

    def update(state: TrainState, grads: PyTree) -> TrainState:
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params=params, opt_state=opt_state, step=state.step + 1)

    def train_step(state: TrainState, batch: PyTree, key: Array) -> tuple[TrainState, Metrics]:
        (loss, aux), grads = value_and_grad(state, batch, key)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new_state = apply_if(finite, lambda s: update(s, grads), state, guard)
        metrics = {"loss": loss, **aux, "grad_norm": grad_norm, "finite": finite}
        return new_state, metrics

    def unchecked_step(state: TrainState, batch: PyTree, key: Array) -> tuple[TrainState, Metrics]:
        # No pass over the gradients: on a small step that pass, a second reader of every
        # gradient, split the fused optimiser update and cost 6-24% of an epoch
        # (benchmarks/training_speed.py, IWAE model, two 2-core CPU VMs).
        (loss, aux), grads = value_and_grad(state, batch, key)
        return update(state, grads), {"loss": loss, **aux, "finite": jnp.isfinite(loss)}

    train_step.__doc__ = (
        f"Train step for `{getattr(loss_fn, '__name__', type(loss_fn).__name__)}`: "
        "`(state, batch, key) -> (state, metrics)`."
    )
    unchecked_step.__doc__ = train_step.__doc__ + " Without the per-step check."
    return GuardedStep(train_step, unchecked=unchecked_step)
