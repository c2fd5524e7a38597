"""Compiled epochs and the host training loop (`fit`) with resume and non-finite guard.

An epoch is one compiled program: the data set stays on the device, a permutation is drawn
inside, batches are gathered from it inside one compiled loop (a `lax.while_loop`, the
loop `lax.scan` lowers to, so that it can stop at a non-finite step), and the host is touched once
per epoch (metrics, progress bar, metrics file, checkpoint).

Randomness is a pure function of the run's base key, so that a resumed run is bit-identical
to an uninterrupted one:

- epoch `e` (1-based) of `fit` uses `epoch_key = fold_in(key, e)`;
- inside an epoch, `perm_key, steps_key = split(epoch_key)`, the order of the examples is
  `permutation(perm_key, num_examples)`, and step `i` (0-based within the epoch) uses
  `preprocess_key, step_key = split(fold_in(steps_key, i))`: `preprocess(preprocess_key,
  batch)` and `train_step(state, batch, step_key)`.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vi_jax._progress import tqdm
from vi_jax._validation import check_callable, check_positive_int
from vi_jax.training._keys import as_typed_key
from vi_jax.training.checkpoint import Checkpointer, check_json
from vi_jax.training.sharding import (
    batch_sharding,
    check_batch_divisible,
    check_mesh,
    replicate,
    replicated_sharding,
)
from vi_jax.training.step import tree_select
from vi_jax.types import Array, PyTree, TrainStep

Preprocess = Callable[[Array, PyTree], PyTree]
EvalFn = Callable[[PyTree, int], Mapping[str, Any]]

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


class NonFiniteLossError(RuntimeError):
    """Training hit a non-finite loss or gradient; nothing bad was applied or saved.

    Attributes:
        epoch: The (1-based) epoch in which it happened.
        step: The (1-based) global number of the training step that failed.
        batch: The (1-based) number of the failing batch within the epoch.
        num_batches: Number of batches (steps) per epoch.
        checkpoint_epoch: The epoch of the last good checkpoint, kept as the latest (None
            if no checkpoint was written).
        state: The last good state: the state just before the failing step.
        metrics: The failing step's metrics (host floats).
    """

    def __init__(
        self,
        message: str,
        *,
        epoch: int,
        step: int,
        batch: int,
        num_batches: int,
        checkpoint_epoch: int | None,
        state: PyTree,
        metrics: dict[str, float],
    ):
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.batch = batch
        self.num_batches = num_batches
        self.checkpoint_epoch = checkpoint_epoch
        self.state = state
        self.metrics = metrics


class EpochMetrics(NamedTuple):
    """What a compiled epoch reports.

    Attributes:
        metrics: Per-step metrics stacked to shape `[num_steps]` (including `"finite"`,
            bool `[num_steps]`); the host averages them.
        all_finite: bool `[]`: whether every step of the epoch was finite. The epoch stops
            at the first non-finite step, so the returned state is the one just before that
            step; the steps after it do not run and report NaN (0 for integer metrics,
            False for `finite`).
    """

    metrics: dict[str, Array]
    all_finite: Array


class FitResult(NamedTuple):
    """The outcome of `fit`.

    Attributes:
        state: The final state.
        history: One record per completed epoch of the run (epoch 1 on, including epochs
            done before a resume, as read back from `metrics.jsonl`).
        key: The run's base PRNG key (restored from the checkpoint on resume).
        resumed_from: The epoch restored from a checkpoint, or None for a fresh start.
    """

    state: PyTree
    history: list[dict[str, Any]]
    key: Array
    resumed_from: int | None


def num_examples_of(data: PyTree, name: str = "data") -> int:
    """The common leading-axis size `N` of every array in `data`, validated.

    Raises:
        ValueError: If `data` has no arrays, a scalar leaf, or leading axes that differ.
    """
    leaves = jax.tree_util.tree_leaves_with_path(data)
    if not leaves:
        raise ValueError(
            f"`{name}` must be a pytree of arrays with a leading axis [N], got no arrays."
        )
    sizes = {}
    for path, leaf in leaves:
        shape = np.shape(leaf)
        where = f"`{name}{jax.tree_util.keystr(path)}`"
        if len(shape) == 0:
            raise ValueError(
                f"{where} is a scalar; every array in `{name}` needs a leading axis [N]."
            )
        sizes[where] = shape[0]
    if len(set(sizes.values())) != 1:
        listing = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ValueError(f"The arrays of `{name}` must have equal leading axes [N], got {listing}.")
    return next(iter(sizes.values()))


def check_data_finite(data: PyTree, name: str = "data") -> None:
    """Raises ValueError if a floating-point array of `data` has NaN or inf entries.

    The reduction runs where the arrays live (one scalar per array comes back), so a data
    set on the device is not copied to the host.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(data):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            if not bool(_all_finite(leaf)):
                raise ValueError(
                    f"`{name}{jax.tree_util.keystr(path)}` has non-finite entries (NaN or inf)."
                )


@jax.jit
def _all_finite(x: Array) -> Array:
    return jnp.isfinite(x).all()


def _check_step_metrics(metrics: Any) -> dict[str, Array]:
    """Trace-time check of a train step's metrics; adds `finite` if the step has none."""
    if not isinstance(metrics, Mapping) or "loss" not in metrics:
        raise TypeError(
            "`train_step` must return `(state, metrics)` with `metrics` a dict of scalars "
            f"containing 'loss', got {type(metrics).__name__}."
        )
    metrics = dict(metrics)
    for name, value in metrics.items():
        if jnp.ndim(value) != 0:
            raise ValueError(
                f"`train_step`'s metric {name!r} must be a scalar, got shape {jnp.shape(value)}."
            )
    if "finite" not in metrics:
        metrics["finite"] = jnp.isfinite(metrics["loss"])
    metrics["finite"] = jnp.asarray(metrics["finite"], dtype=bool)
    return metrics


class _EpochPlan(NamedTuple):
    """The static configuration of a compiled epoch.

    It is hashable and keys the jit cache, so that epoch functions built alike from the
    same `train_step` share one compilation.
    """

    train_step: TrainStep
    preprocess: Preprocess | None
    mesh: Mesh | None
    batch_size: int
    num_examples: int
    num_full: int
    remainder: int


def _epoch_step(
    plan: _EpochPlan, state: PyTree, data: PyTree, idx: Array, i: Array, steps_key: Array
) -> tuple[PyTree, dict[str, Array]]:
    """Step `i` of an epoch on the examples `idx` (`[batch]`) of the on-device `data`."""
    preprocess_key, step_key = jax.random.split(jax.random.fold_in(steps_key, i))
    if plan.mesh is not None:
        # Sharding the indices makes each device gather its own rows of the batch from
        # its replica of the data: no communication for the gather.
        idx = jax.lax.with_sharding_constraint(idx, batch_sharding(plan.mesh))
    batch = jax.tree.map(
        lambda x: x.at[idx].get(mode="promise_in_bounds", unique_indices=True), data
    )
    if plan.mesh is not None:
        batch = jax.lax.with_sharding_constraint(
            batch, jax.tree.map(lambda _: batch_sharding(plan.mesh), batch)
        )
    if plan.preprocess is not None:
        batch = plan.preprocess(preprocess_key, batch)
    new_state, metrics = plan.train_step(state, batch, step_key)
    metrics = _check_step_metrics(metrics)
    if plan.mesh is not None:
        new_state = jax.lax.with_sharding_constraint(
            new_state, jax.tree.map(lambda _: replicated_sharding(plan.mesh), new_state)
        )
    return new_state, metrics


def _not_run(shapes: dict[str, jax.ShapeDtypeStruct], lead: tuple[int, ...]) -> dict[str, Array]:
    """Metrics `[*lead]` of steps that do not run: NaN, 0, or False for `finite`."""

    def fill(s: jax.ShapeDtypeStruct) -> Array:
        value = jnp.nan if jnp.issubdtype(s.dtype, jnp.inexact) else 0
        return jnp.full((*lead, *s.shape), value, s.dtype)

    return {name: fill(s) for name, s in shapes.items()}


def _epoch(
    plan: _EpochPlan, state: PyTree, data: PyTree, key: Array
) -> tuple[PyTree, EpochMetrics]:
    """One epoch: a permutation from `key`, then a loop of steps that stops at a bad one."""
    perm_key, steps_key = jax.random.split(key)
    perm = jax.random.permutation(perm_key, plan.num_examples)
    full = perm[: plan.num_full * plan.batch_size].reshape(plan.num_full, plan.batch_size)
    # A step from `make_train_step` already leaves the state unchanged when it is not
    # finite, at no cost; any other step gets a select here.
    self_guarded = getattr(plan.train_step, "guards_nonfinite", False) is True

    def step(state, idx, i):
        new_state, metrics = _epoch_step(plan, state, data, idx, i, steps_key)
        if not self_guarded:
            new_state = tree_select(metrics["finite"], new_state, state)
        return new_state, metrics

    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)),
        (state, full[0], steps_key),
    )
    shapes = jax.eval_shape(lambda s, idx, k: step(s, idx, jnp.asarray(0))[1], *abstract)

    # A while loop rather than a scan: it stops after the first non-finite step, so the
    # state it returns is the last good one without a per-step select to freeze it.
    def keep_going(carry):
        i, _, ok, _ = carry
        return (i < plan.num_full) & ok

    def body(carry):
        i, state, _, buffers = carry
        state, metrics = step(state, full[i], i)
        buffers = {k: buffers[k].at[i].set(metrics[k]) for k in buffers}
        return i + 1, state, metrics["finite"], buffers

    carry = (jnp.asarray(0), state, jnp.asarray(True), _not_run(shapes, (plan.num_full,)))
    _, state, ok, metrics = jax.lax.while_loop(keep_going, body, carry)
    if plan.remainder:
        idx = perm[plan.num_full * plan.batch_size :]
        new_state, last = step(state, idx, jnp.asarray(plan.num_full))
        # Runs only if the epoch has not stopped (one select per epoch, not per step).
        state = tree_select(ok, new_state, state)
        last = tree_select(ok, last, _not_run(shapes, ()))
        ok = ok & last["finite"]
        metrics = jax.tree.map(lambda m, x: jnp.concatenate([m, x[None]]), metrics, last)
    return state, EpochMetrics(metrics=metrics, all_finite=ok)


_run_epoch = jax.jit(_epoch, static_argnums=0)
_run_epoch_donating = jax.jit(_epoch, static_argnums=0, donate_argnums=1)


class EpochFn:
    """One training epoch compiled as a single program; build it with `make_epoch_fn`.

    Call it as `epoch(state, data, key) -> (state, EpochMetrics)`. The state's buffers are
    donated (when `donate`), so do not use the `state` passed in afterwards. `lower(state,
    data, key)` gives the lowered program (HLO, ahead-of-time compilation).

    Attributes:
        batch_size: Examples per step.
        num_examples: The `N` of the data set it was built for.
        num_steps: Steps per epoch: `N // batch_size`, plus one if the remainder is kept.
        mesh: The data mesh, or None for one device.
    """

    def __init__(
        self,
        train_step: TrainStep,
        *,
        batch_size: int,
        num_examples: int,
        drop_remainder: bool = True,
        preprocess: Preprocess | None = None,
        mesh: Mesh | None = None,
        donate: bool = True,
    ):
        check_callable(train_step, "train_step")
        num_examples = check_positive_int(num_examples, "num_examples")
        batch_size = check_positive_int(batch_size, "batch_size")
        if batch_size > num_examples:
            raise ValueError(
                f"`batch_size` ({batch_size}) must be <= the number of examples "
                f"`num_examples` ({num_examples})."
            )
        if not isinstance(drop_remainder, bool):
            raise TypeError(
                f"`drop_remainder` must be a bool, got {type(drop_remainder).__name__}."
            )
        if not isinstance(donate, bool):
            raise TypeError(f"`donate` must be a bool, got {type(donate).__name__}.")
        if preprocess is not None:
            check_callable(preprocess, "preprocess")
        if mesh is not None:
            mesh = check_mesh(mesh)
            check_batch_divisible(batch_size, mesh)
        remainder = 0 if drop_remainder else num_examples % batch_size
        if remainder and mesh is not None:
            check_batch_divisible(
                remainder,
                mesh,
                name="num_examples % batch_size",
                hint=" Use drop_remainder=True or another batch_size.",
            )
        self.train_step = train_step
        self.batch_size = batch_size
        self.num_examples = num_examples
        self.drop_remainder = drop_remainder
        self.preprocess = preprocess
        self.mesh = mesh
        self.donate = donate
        self._num_full = num_examples // batch_size
        self._remainder = remainder
        self.num_steps = self._num_full + (1 if remainder else 0)
        self._plan = _EpochPlan(
            train_step=train_step,
            preprocess=preprocess,
            mesh=mesh,
            batch_size=batch_size,
            num_examples=num_examples,
            num_full=self._num_full,
            remainder=remainder,
        )
        self._jitted = _run_epoch_donating if donate else _run_epoch

    def lower(self, state: PyTree, data: PyTree, key: Any) -> jax.stages.Lowered:
        """Lowers the epoch for these arguments (inspect its HLO or `.compile()` it)."""
        if self.mesh is not None:
            state, data = replicate((state, data), self.mesh)
        return self._jitted.lower(self._plan, state, data, as_typed_key(key))

    def __call__(self, state: PyTree, data: PyTree, key: Any) -> tuple[PyTree, EpochMetrics]:
        """Runs one epoch.

        Args:
            state: The training state (e.g. a `TrainState`); donated.
            data: A pytree of device arrays with leading axis `[num_examples]` (numpy
                arrays work but are copied to the device on every call).
            key: The epoch's PRNG key (typed or raw).

        Returns:
            `(state, EpochMetrics)`; metrics have shape `[num_steps]`.
        """
        n = num_examples_of(data)
        if n != self.num_examples:
            raise ValueError(
                f"`data` has {n} examples but this epoch function was built for "
                f"`num_examples` = {self.num_examples}."
            )
        key = as_typed_key(key)
        if self.mesh is not None:
            state, data = replicate((state, data), self.mesh)
        return self._jitted(self._plan, state, data, key)


def make_epoch_fn(
    train_step: TrainStep,
    *,
    batch_size: int,
    num_examples: int,
    drop_remainder: bool = True,
    preprocess: Preprocess | None = None,
    mesh: Mesh | None = None,
    donate: bool = True,
) -> EpochFn:
    """Compiles one epoch of `train_step` as a single loop over shuffled batches.

    The epoch draws a permutation of the `num_examples` examples from its key, gathers each
    batch of indices from the on-device `data` inside the loop, optionally applies
    `preprocess(key, batch)` on the device, and calls `train_step(state, batch, key)`
    (keys as described in the module docstring). The state buffers are donated. The loop
    stops after the first non-finite step and returns the state from before it: a step
    made by `make_train_step` leaves the state unchanged itself; for any other step the
    epoch discards that step's state.

    Args:
        train_step: `train_step(state, batch, key) -> (state, metrics)`, e.g. from
            `make_train_step`; `metrics` is a dict of scalars with `"loss"` and optionally
            a bool `"finite"` (default: whether the loss is finite).
        batch_size: Examples per step, 1 <= batch_size <= num_examples; with a mesh,
            divisible by the number of devices on its `"data"` axis.
        num_examples: `N`, the leading-axis size of every array of `data`.
        drop_remainder: Whether to drop the last `N % batch_size` examples of each
            permutation (True) or train on them as one smaller final step (False; with a
            mesh the remainder must also be divisible by the number of devices).
        preprocess: Optional `preprocess(key, batch) -> batch`, applied per batch on the
            device (e.g. dynamic binarisation).
        mesh: A data mesh (`make_data_mesh`) for data parallelism, or None for one device.
        donate: Whether to donate the input state's buffers (saves memory and copies).

    Returns:
        An `EpochFn`: `epoch(state, data, key) -> (state, EpochMetrics)` with per-step
        metrics of shape `[num_steps]`.

    Raises:
        ValueError: If `batch_size` is out of range or not divisible by the mesh size.
        TypeError: If `train_step`/`preprocess` is not callable or `mesh` is not a Mesh.
    """
    return EpochFn(
        train_step,
        batch_size=batch_size,
        num_examples=num_examples,
        drop_remainder=drop_remainder,
        preprocess=preprocess,
        mesh=mesh,
        donate=donate,
    )


def _to_float(value: Any, name: str) -> float:
    arr = np.asarray(value)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"`eval_fn` must return a dict of scalars; {name!r} has shape {arr.shape}.")
    return float(arr)


def _read_history(path: str, last_epoch: int) -> list[dict[str, Any]]:
    """Reads `metrics.jsonl`, keeps the records of epochs <= `last_epoch`, rewrites it."""
    if not os.path.exists(path):
        return []
    records, dropped = [], 0
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # e.g. a line cut short when a run was killed
                dropped += 1
                warnings.warn(f"Dropping unreadable line {number} of {path}.", stacklevel=3)
    kept = [r for r in records if r.get("epoch", math.inf) <= last_epoch]
    if dropped or len(kept) != len(records):
        # Epochs after the checkpoint we resume from will be run again: drop their lines.
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, path)
    return kept


def _nonfinite_message(
    epoch: int,
    step: int,
    batch: int,
    num_batches: int,
    metrics: dict[str, float],
    checkpoint_epoch: int | None,
    run_dir: str | None,
) -> str:
    shown = ", ".join(f"{k}={v:.6g}" for k, v in metrics.items() if k in ("loss", "grad_norm"))
    msg = (
        f"Non-finite loss or gradient at epoch {epoch}, step {step} (batch {batch} of "
        f"{num_batches} of the epoch; {shown}). The state was not updated by that step and "
        f"nothing was saved for epoch {epoch}. "
    )
    if run_dir is None:
        msg += "No `run_dir` was given, so there is no checkpoint; "
    elif checkpoint_epoch is None:
        msg += f"No checkpoint had been written yet in {run_dir}; "
    else:
        ckpt_dir = os.path.join(run_dir, CHECKPOINT_DIR)
        msg += (
            f"the last good checkpoint, at epoch {checkpoint_epoch}, is kept as the latest "
            f"in {ckpt_dir}; "
        )
    return msg + (
        "the last good state is `error.state`. Consider a lower learning rate, gradient "
        "clipping, or checking the data and the loss for log(0) / division by zero."
    )


def fit(
    key: Any,
    state: PyTree,
    train_step: TrainStep | EpochFn,
    data: PyTree,
    *,
    num_epochs: int,
    batch_size: int | None = None,
    drop_remainder: bool = True,
    preprocess: Preprocess | None = None,
    mesh: Mesh | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    max_to_keep: int | None = 3,
    eval_fn: EvalFn | None = None,
    config: dict[str, Any] | None = None,
    progress: bool = True,
) -> FitResult:
    """Trains for `num_epochs` epochs, one compiled program per epoch, resuming if possible.

    Per epoch `e` (1-based) the host runs the compiled epoch with key `fold_in(key, e)`,
    fetches its metrics once, calls `eval_fn(state, e)`, appends a line to
    `run_dir/metrics.jsonl` (`{"epoch", "step", <mean train metrics>, <eval metrics>,
    "time_s"}`), updates the progress bar, and every `checkpoint_every` epochs (and after
    the last) saves an orbax checkpoint to `run_dir/checkpoints/<e>/`. If `run_dir` holds a
    checkpoint, training resumes from the latest one (state, base key and epoch), which is
    bit-identical to not having stopped. On a non-finite loss or gradient it raises
    `NonFiniteLossError` without saving: the last good checkpoint stays the latest.

    Args:
        key: The run's base PRNG key (typed or raw). On resume, the checkpoint's key is
            used (with a warning if it differs).
        state: The initial state (e.g. `init_train_state(params, optimizer)`); on resume it
            is the template the checkpoint is restored onto. It is copied, not consumed.
        train_step: `train_step(state, batch, key) -> (state, metrics)` (then `batch_size`
            is required), or an `EpochFn` from `make_epoch_fn` (then `batch_size`,
            `drop_remainder`, `preprocess` and `mesh` come from it and must not be given).
        data: A pytree of finite arrays with equal leading axes `[N]`; placed on the
            device(s) once (replicated over the mesh).
        num_epochs: Total number of epochs of the run (>= 1), counting resumed ones.
        batch_size: Examples per step (1 <= batch_size <= N; divisible by the mesh size).
        drop_remainder: See `make_epoch_fn`.
        preprocess: Optional on-device `preprocess(key, batch) -> batch`.
        mesh: A data mesh for data parallelism (`make_data_mesh`), or None.
        run_dir: Directory for `metrics.jsonl` and `checkpoints/`; None: no files, no
            resume.
        checkpoint_every: Save a checkpoint every this many epochs (>= 1) and after the
            last epoch.
        max_to_keep: How many recent checkpoints to keep (None: all).
        eval_fn: Optional `eval_fn(state, epoch) -> dict of scalars`, merged into the
            epoch's record. Do not keep `state`: its buffers are donated to the next epoch.
        config: A JSON-serialisable dict saved in every checkpoint (as
            `Checkpoint.config["user"]`, next to the loop's settings under `"fit"`).
        progress: Whether to show a tqdm progress bar over epochs.

    Returns:
        A `FitResult` (final state, per-epoch history, base key, resumed epoch).

    Raises:
        NonFiniteLossError: On a non-finite loss or gradient (see its attributes).
        ValueError / TypeError: On invalid arguments, naming the argument.
    """
    key = as_typed_key(key)
    num_epochs = check_positive_int(num_epochs, "num_epochs")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if max_to_keep is not None:
        max_to_keep = check_positive_int(max_to_keep, "max_to_keep")
    if eval_fn is not None:
        check_callable(eval_fn, "eval_fn")
    config = check_json(config)
    num_examples = num_examples_of(data)

    if isinstance(train_step, EpochFn):
        epoch_fn = train_step
        given = {
            "batch_size": batch_size is not None,
            "drop_remainder": drop_remainder is not True,
            "preprocess": preprocess is not None,
            "mesh": mesh is not None,
        }
        clash = [name for name, was_given in given.items() if was_given]
        if clash:
            raise ValueError(
                f"`train_step` is an EpochFn, which fixes {', '.join(clash)}; pass "
                f"{', '.join(f'`{c}`' for c in clash)} to make_epoch_fn instead."
            )
        if epoch_fn.num_examples != num_examples:
            raise ValueError(
                f"`data` has {num_examples} examples but the EpochFn `train_step` was built "
                f"for {epoch_fn.num_examples}."
            )
    else:
        check_callable(train_step, "train_step")
        if batch_size is None:
            raise ValueError("`batch_size` is required when `train_step` is a step function.")
        epoch_fn = make_epoch_fn(
            train_step,
            batch_size=batch_size,
            num_examples=num_examples,
            drop_remainder=drop_remainder,
            preprocess=preprocess,
            mesh=mesh,
        )
    mesh = epoch_fn.mesh
    fit_config = {
        "batch_size": epoch_fn.batch_size,
        "num_examples": epoch_fn.num_examples,
        "num_steps_per_epoch": epoch_fn.num_steps,
        "drop_remainder": epoch_fn.drop_remainder,
    }

    data = replicate(data, mesh)
    check_data_finite(data)
    # A private copy: the compiled epoch donates its input state, and the caller's `state`
    # must survive (e.g. to start another run from it).
    state = jax.tree.map(jnp.copy, replicate(state, mesh))

    checkpointer = None
    metrics_path = None
    start_epoch = 0
    resumed_from = None
    history: list[dict[str, Any]] = []
    if run_dir is not None:
        run_dir = os.path.abspath(os.fspath(run_dir))
        os.makedirs(run_dir, exist_ok=True)
        metrics_path = os.path.join(run_dir, METRICS_FILE)
        checkpointer = Checkpointer(os.path.join(run_dir, CHECKPOINT_DIR), max_to_keep=max_to_keep)
        if checkpointer.latest_epoch() is not None:
            restored = checkpointer.restore(state)
            state, start_epoch, resumed_from = restored.state, restored.epoch, restored.epoch
            if not np.array_equal(jax.random.key_data(restored.key), jax.random.key_data(key)):
                warnings.warn(
                    f"`key` differs from the base key of the run in {run_dir}; resuming with "
                    "the checkpoint's key so that the run stays reproducible.",
                    stacklevel=2,
                )
            key = restored.key
            saved_fit = restored.config.get("fit", {})
            changed = {
                k: (saved_fit[k], v) for k, v in fit_config.items() if saved_fit.get(k, v) != v
            }
            if changed:
                warnings.warn(
                    f"Resuming {run_dir} with different settings (saved, now): {changed}.",
                    stacklevel=2,
                )
        history = _read_history(metrics_path, start_epoch)

    # The global step counter: read once from the state when it has one (a TrainState).
    global_step = int(state.step) if hasattr(state, "step") else start_epoch * epoch_fn.num_steps
    bar = None
    try:
        if start_epoch >= num_epochs:
            return FitResult(state=state, history=history, key=key, resumed_from=resumed_from)
        bar = tqdm(
            total=num_epochs, initial=start_epoch, disable=not progress, unit="epoch", desc="fit"
        )
        for epoch in range(start_epoch + 1, num_epochs + 1):
            t0 = time.perf_counter()
            state, out = epoch_fn(state, data, jax.random.fold_in(key, epoch))
            out = jax.device_get(out)  # The one host synchronisation of the epoch.
            elapsed = time.perf_counter() - t0
            step_metrics = {k: np.asarray(v) for k, v in out.metrics.items()}
            if not bool(out.all_finite):
                i = int(np.argmin(step_metrics["finite"]))
                bad = {k: float(v[i]) for k, v in step_metrics.items() if k != "finite"}
                checkpoint_epoch = None if checkpointer is None else checkpointer.latest_epoch()
                step = global_step + i + 1
                raise NonFiniteLossError(
                    _nonfinite_message(
                        epoch, step, i + 1, epoch_fn.num_steps, bad, checkpoint_epoch, run_dir
                    ),
                    epoch=epoch,
                    step=step,
                    batch=i + 1,
                    num_batches=epoch_fn.num_steps,
                    checkpoint_epoch=checkpoint_epoch,
                    state=state,
                    metrics=bad,
                )
            global_step += epoch_fn.num_steps
            record: dict[str, Any] = {"epoch": epoch, "step": global_step}
            # The loss first, then the other training metrics, averaged over the steps.
            names = ["loss"] + sorted(k for k in step_metrics if k not in ("loss", "finite"))
            record.update({k: float(np.mean(step_metrics[k])) for k in names})
            if eval_fn is not None:
                for name, value in dict(eval_fn(state, epoch)).items():
                    if name in record:
                        raise ValueError(
                            f"`eval_fn` returned {name!r}, which is already a training "
                            f"metric; rename it (e.g. 'eval_{name}')."
                        )
                    record[name] = _to_float(value, name)
            record["time_s"] = elapsed
            history.append(record)
            if metrics_path is not None:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if checkpointer is not None and (epoch % checkpoint_every == 0 or epoch == num_epochs):
                checkpointer.save(epoch, state, key, config={"user": config, "fit": fit_config})
            bar.set_postfix(loss=f"{record['loss']:.4g}")
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if checkpointer is not None:
            checkpointer.close()
    return FitResult(state=state, history=history, key=key, resumed_from=resumed_from)
