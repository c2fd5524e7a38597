"""The host training loop: `fit` runs compiled epochs, records, checkpoints and resumes.

Epoch `e` (1-based) of `fit` runs the compiled epoch of `vi_jax.training.epoch` (whose
names are re-exported here, their old import path) with `epoch_key = fold_in(key, e)`, so
that a resumed run is bit-identical to an uninterrupted one. The host is touched once per
epoch: metrics, progress bar, metrics file, checkpoint.
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
from vi_jax.training.checkpoint import Checkpointer, check_json, make_run_dir
from vi_jax.training.epoch import (
    EpochFn,
    EpochMetrics,
    Preprocess,
    check_data_finite,
    make_epoch_fn,
    num_examples_of,
)
from vi_jax.training.sharding import place_data, replicate
from vi_jax.types import Array, PyTree, TrainStep

EvalFn = Callable[[PyTree, int], Mapping[str, Any]]

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"

__all__ = [
    "CHECKPOINT_DIR",
    "METRICS_FILE",
    "EpochFn",
    "EpochMetrics",
    "EvalFn",
    "FitResult",
    "NonFiniteLossError",
    "Preprocess",
    "check_data_finite",
    "fit",
    "make_epoch_fn",
    "num_examples_of",
]


class NonFiniteLossError(RuntimeError):
    """Training hit a non-finite loss or gradient; nothing bad was applied or saved.

    Attributes:
      epoch: the (1-based) epoch in which it happened.
      step: the (1-based) global number of the training step that failed.
      batch: the (1-based) number of the failing batch within the epoch.
      num_batches: number of batches (steps) per epoch.
      checkpoint_epoch: the epoch of the last good checkpoint, kept as the latest (None
        if no checkpoint was written).
      state: the last good state: the state just before the failing step.
      metrics: the failing step's metrics (host floats).
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


class FitResult(NamedTuple):
    """The outcome of `fit`.

    Attributes:
      state: the final state.
      history: one record per completed epoch of the run (epoch 1 on, including epochs
        done before a resume, as read back from `metrics.jsonl`).
      key: the run's base PRNG key (restored from the checkpoint on resume).
      resumed_from: the epoch restored from a checkpoint, or None for a fresh start.
    """

    state: PyTree
    history: list[dict[str, Any]]
    key: Array
    resumed_from: int | None


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
      key: the run's base PRNG key (typed or raw). On resume, the checkpoint's key is
        used (with a warning if it differs).
      state: the initial state (e.g. `init_train_state(params, optimizer)`); on resume it
        is the template the checkpoint is restored onto. It is copied, not consumed.
      train_step: `train_step(state, batch, key) -> (state, metrics)` (then `batch_size`
        is required), or an `EpochFn` from `make_epoch_fn` (then `batch_size`,
        `drop_remainder`, `preprocess` and `mesh` come from it and must not be given).
      data: A pytree of finite arrays with equal leading axes `[N]`; placed on the
        device(s) once (replicated over the mesh).
      num_epochs: total number of epochs of the run (>= 1), counting resumed ones.
      batch_size: examples per step (1 <= batch_size <= N; divisible by the mesh size).
      drop_remainder: see `make_epoch_fn`.
      preprocess: optional on-device `preprocess(key, batch) -> batch`.
      mesh: A data mesh for data parallelism (`make_data_mesh`), or None.
      run_dir: directory for `metrics.jsonl` and `checkpoints/`; None: no files, no
        resume.
      checkpoint_every: save a checkpoint every this many epochs (>= 1) and after the
        last epoch.
      max_to_keep: how many recent checkpoints to keep (None: all).
      eval_fn: optional `eval_fn(state, epoch) -> dict of scalars`, merged into the
        epoch's record. Do not keep `state`: its buffers are donated to the next epoch.
      config: A JSON-serialisable dict saved in every checkpoint (as
        `Checkpoint.config["user"]`, next to the loop's settings under `"fit"`).
      progress: whether to show a tqdm progress bar over epochs.

    Returns:
      A `FitResult` (final state, per-epoch history, base key, resumed epoch).

    Raises:
      NonFiniteLossError: on a non-finite loss or gradient (see its attributes).
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
    epoch_fn = _epoch_fn_for(
        train_step,
        num_examples_of(data),
        batch_size=batch_size,
        drop_remainder=drop_remainder,
        preprocess=preprocess,
        mesh=mesh,
    )
    data = place_data(data, epoch_fn.mesh)
    check_data_finite(data)
    # A private copy: the compiled epoch donates its input state, and the caller's `state`
    # must survive (e.g. to start another run from it).
    state = jax.tree.map(jnp.copy, replicate(state, epoch_fn.mesh))
    files = _RunFiles(run_dir, max_to_keep)
    settings = _fit_settings(epoch_fn)
    try:
        state, key, resumed_from, history = _resume(files, state, key, settings)
        start_epoch = resumed_from or 0
        if start_epoch >= num_epochs:
            return FitResult(state=state, history=history, key=key, resumed_from=resumed_from)
        # The global step counter: read once from the state when it has one (a TrainState).
        steps_done = start_epoch * epoch_fn.num_steps
        global_step = int(state.step) if hasattr(state, "step") else steps_done
        with tqdm(
            total=num_epochs, initial=start_epoch, disable=not progress, unit="epoch", desc="fit"
        ) as bar:
            for epoch in range(start_epoch + 1, num_epochs + 1):
                t0 = time.perf_counter()
                state, out = epoch_fn(state, data, jax.random.fold_in(key, epoch))
                out = jax.device_get(out)  # The one host synchronisation of the epoch.
                elapsed = time.perf_counter() - t0
                if not bool(out.all_finite):
                    raise _nonfinite_error(out, epoch, global_step, epoch_fn, files, state)
                global_step += epoch_fn.num_steps
                record = _record_epoch(out, epoch, global_step, elapsed, eval_fn, state)
                history.append(record)
                files.append(record)
                if epoch % checkpoint_every == 0 or epoch == num_epochs:
                    files.save(epoch, state, key, config={"user": config, "fit": settings})
                bar.set_postfix(loss=f"{record['loss']:.4g}")
                bar.update(1)
    finally:
        files.close()
    return FitResult(state=state, history=history, key=key, resumed_from=resumed_from)


def _epoch_fn_for(
    train_step: TrainStep | EpochFn,
    num_examples: int,
    *,
    batch_size: int | None,
    drop_remainder: bool,
    preprocess: Preprocess | None,
    mesh: Mesh | None,
) -> EpochFn:
    """`fit`'s two calling modes: an `EpochFn` as given, or one built from a step."""
    if not isinstance(train_step, EpochFn):
        check_callable(train_step, "train_step")
        if batch_size is None:
            raise ValueError("`batch_size` is required when `train_step` is a step function.")
        return make_epoch_fn(
            train_step,
            batch_size=batch_size,
            num_examples=num_examples,
            drop_remainder=drop_remainder,
            preprocess=preprocess,
            mesh=mesh,
        )
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
    if train_step.num_examples != num_examples:
        raise ValueError(
            f"`data` has {num_examples} examples but the EpochFn `train_step` was built "
            f"for {train_step.num_examples}."
        )
    return train_step


def _fit_settings(epoch_fn: EpochFn) -> dict[str, Any]:
    """The loop's settings, saved in each checkpoint (under `"fit"`) and compared on resume."""
    return {
        "batch_size": epoch_fn.batch_size,
        "num_examples": epoch_fn.num_examples,
        "num_steps_per_epoch": epoch_fn.num_steps,
        "drop_remainder": epoch_fn.drop_remainder,
    }


class _RunFiles:
    """A run directory's `metrics.jsonl` and `checkpoints/`; does nothing without `run_dir`."""

    def __init__(self, run_dir: str | os.PathLike[str] | None, max_to_keep: int | None):
        self.run_dir = None if run_dir is None else make_run_dir(run_dir)
        self.metrics_path = None
        self.checkpointer = None
        if self.run_dir is not None:
            self.metrics_path = os.path.join(self.run_dir, METRICS_FILE)
            self.checkpointer = Checkpointer(
                os.path.join(self.run_dir, CHECKPOINT_DIR), max_to_keep=max_to_keep
            )

    def latest_epoch(self) -> int | None:
        return None if self.checkpointer is None else self.checkpointer.latest_epoch()

    def append(self, record: dict[str, Any]) -> None:
        # In a multi-host run every process has the same record; one writes it.
        if self.metrics_path is not None and jax.process_index() == 0:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def save(self, epoch: int, state: PyTree, key: Array, config: dict[str, Any]) -> None:
        if self.checkpointer is not None:
            self.checkpointer.save(epoch, state, key, config=config)

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()


def _resume(
    files: _RunFiles, state: PyTree, key: Array, settings: dict[str, Any]
) -> tuple[PyTree, Array, int | None, list[dict[str, Any]]]:
    """Restores the latest checkpoint of the run, if any.

    Returns:
      `(state, key, resumed_from, history)`: the restored state and base key (or the given
      ones), the restored epoch (None for a fresh start), and the records of the epochs up
      to it read back from `metrics.jsonl`.
    """
    if files.checkpointer is None:
        return state, key, None, []
    resumed_from = None
    # The newest intact checkpoint; corrupt newer ones are moved aside with a warning.
    restored = files.checkpointer.restore_latest_intact(state)
    if restored is not None:
        state, resumed_from = restored.state, restored.epoch
        if not np.array_equal(jax.random.key_data(restored.key), jax.random.key_data(key)):
            warnings.warn(
                f"`key` differs from the base key of the run in {files.run_dir}; resuming "
                "with the checkpoint's key so that the run stays reproducible.",
                stacklevel=3,
            )
        key = restored.key
        saved = restored.config.get("fit", {})
        changed = {k: (saved[k], v) for k, v in settings.items() if saved.get(k, v) != v}
        if changed:
            warnings.warn(
                f"Resuming {files.run_dir} with different settings (saved, now): {changed}.",
                stacklevel=3,
            )
    return state, key, resumed_from, _read_history(files.metrics_path, resumed_from or 0)


def _record_epoch(
    out: EpochMetrics,
    epoch: int,
    global_step: int,
    elapsed: float,
    eval_fn: EvalFn | None,
    state: PyTree,
) -> dict[str, Any]:
    """An epoch's line of `metrics.jsonl`: the mean train metrics, then `eval_fn`'s."""
    step_metrics = {k: np.asarray(v) for k, v in out.metrics.items()}
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
    return record


def _nonfinite_error(
    out: EpochMetrics,
    epoch: int,
    global_step: int,
    epoch_fn: EpochFn,
    files: _RunFiles,
    state: PyTree,
) -> NonFiniteLossError:
    """The error for the first non-finite step of an epoch (the state is the last good one)."""
    step_metrics = {k: np.asarray(v) for k, v in out.metrics.items()}
    i = int(np.argmin(step_metrics["finite"]))
    bad = {k: float(v[i]) for k, v in step_metrics.items() if k != "finite"}
    checkpoint_epoch = files.latest_epoch()
    step = global_step + i + 1
    message = _nonfinite_message(
        epoch, step, i + 1, epoch_fn.num_steps, bad, checkpoint_epoch, files.run_dir
    )
    return NonFiniteLossError(
        message,
        epoch=epoch,
        step=step,
        batch=i + 1,
        num_batches=epoch_fn.num_steps,
        checkpoint_epoch=checkpoint_epoch,
        state=state,
        metrics=bad,
    )
