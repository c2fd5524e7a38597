"""Atomic orbax checkpoints of a training state, its epoch, its PRNG key and a config.

One checkpoint per saved epoch under `directory/<epoch>/`, written by orbax's
`CheckpointManager` (atomically: a checkpoint appears only once it is complete), with two
items: `state` (the state pytree, arrays bit-exact) and `meta` (JSON: the epoch, the
PRNG key's implementation and raw `jax.random.key_data`, and a user config).

Integrity: once orbax has finished a save, a manifest `<epoch>/vi_jax_manifest.json`
with the SHA-256 and size of every file of the checkpoint (arrays and metadata) is
written last, atomically. `restore` verifies it first and raises `CheckpointCorruptError`
(naming the file and what is wrong) on any mismatch, missing file or missing manifest;
`restore_latest_intact` falls back to the newest intact checkpoint and moves each bad
one aside to `<directory>.corrupt/` (renamed, never deleted). Directories written before
manifests existed (no `.vi_jax_manifests` marker) are restored unverified, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vi_jax._io import write_text_atomic
from vi_jax._validation import check_positive_int
from vi_jax.training._keys import as_typed_key
from vi_jax.types import PyTree

_FORMAT_VERSION = 1
MANIFEST_NAME = "vi_jax_manifest.json"
"""The checksum manifest inside each checkpoint directory, written last."""
_MARKER_NAME = ".vi_jax_manifests"  # in the checkpoint root: every checkpoint has one
# Fault injection for tests (tests/training/test_faults.py): seconds to sleep in each
# save, before the manifest is written ("before_manifest", the default phase: a kill
# then leaves a checkpoint without one) or after it ("after_manifest").
FAULT_SAVE_DELAY_ENV = "VI_JAX_FAULT_SAVE_DELAY_S"
FAULT_SAVE_PHASE_ENV = "VI_JAX_FAULT_SAVE_PHASE"


def _fault_delay(phase: str) -> None:
    delay = float(os.environ.get(FAULT_SAVE_DELAY_ENV, "0") or 0)
    if delay > 0 and os.environ.get(FAULT_SAVE_PHASE_ENV, "before_manifest") == phase:
        time.sleep(delay)


class CheckpointCorruptError(ValueError):
    """A checkpoint failed its integrity check (or no intact checkpoint is left)."""


def _barrier(name: str) -> None:
    """Waits for every process (a no-op in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def make_run_dir(run_dir: str | os.PathLike[str], name: str = "run_dir") -> str:
    """Creates `run_dir` (absolute path returned); refuses a path that is a file."""
    run_dir = os.path.abspath(os.fspath(run_dir))
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"`{name}` {run_dir} is an existing file, not a run directory.")
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checkpoint_files(step_dir: str) -> list[str]:
    """Every file under `step_dir` (relative, sorted), the manifest excluded."""
    out = []
    for root, _, files in os.walk(step_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), step_dir)
            if rel != MANIFEST_NAME:
                out.append(rel)
    return sorted(out)


def write_manifest(step_dir: str, epoch: int) -> None:
    """Writes the SHA-256 manifest of a finished checkpoint directory (atomically)."""
    files = {
        rel: {
            "sha256": _sha256(os.path.join(step_dir, rel)),
            "size": os.path.getsize(os.path.join(step_dir, rel)),
        }
        for rel in _checkpoint_files(step_dir)
    }
    manifest = {"format": _FORMAT_VERSION, "epoch": epoch, "files": files}
    write_text_atomic(os.path.join(step_dir, MANIFEST_NAME), json.dumps(manifest, indent=1))


def verify_checkpoint(step_dir: str) -> str | None:
    """None if the checkpoint in `step_dir` matches its manifest, else why not."""
    path = os.path.join(step_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        return f"no checksum manifest {MANIFEST_NAME} (the save did not finish)"
    try:
        with open(path) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable manifest {path}: {err}"
    for rel, expected in sorted(files.items()):
        full = os.path.join(step_dir, rel)
        if not os.path.isfile(full):
            return f"file {rel} is missing"
        size = os.path.getsize(full)
        if size != expected["size"]:
            return f"file {rel} has {size} bytes, the manifest says {expected['size']}"
        if _sha256(full) != expected["sha256"]:
            return f"file {rel} has a SHA-256 that differs from its manifest's"
    return None


class Checkpoint(NamedTuple):
    """A restored checkpoint.

    Attributes:
        epoch: Number of completed epochs when it was saved.
        state: The state pytree, with the structure, dtypes and shardings of the template.
        key: The base PRNG key of the run (a typed key `[]`).
        config: The JSON config saved with it (a dict; empty if none was given).
    """

    epoch: int
    state: PyTree
    key: jax.Array
    config: dict[str, Any]


def check_json(config: Any, name: str = "config") -> dict[str, Any]:
    """Returns `config` (a dict, or {} for None), or raises if it is not JSON-serialisable."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise TypeError(
            f"`{name}` must be a dict (JSON-serialisable) or None, got {type(config).__name__}."
        )
    try:
        json.dumps(config)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be JSON-serialisable: {err}") from err
    return config


class Checkpointer:
    """Saves and restores training checkpoints in one directory (one per epoch).

    Use as a context manager or call `close()`. Saving is synchronous, so the state's
    buffers may be donated to the next compiled epoch as soon as `save` returns.

    Args:
        directory: Where checkpoints live (created if missing).
        max_to_keep: How many of the most recent checkpoints to keep (None: all).
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_to_keep: int | None = 3):
        if max_to_keep is not None:
            max_to_keep = check_positive_int(max_to_keep, "max_to_keep")
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=False,
            # A run killed mid-save leaves a temporary directory; remove it on reopening.
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )
        marker = os.path.join(self.directory, _MARKER_NAME)
        # A new directory: every checkpoint in it will carry a manifest. An old one
        # (checkpoints but no marker) predates manifests.
        self.verified = os.path.exists(marker) or not self._manager.all_steps()
        if self.verified and not os.path.exists(marker):
            write_text_atomic(marker, "every checkpoint here has a vi_jax_manifest.json\n")
        self.quarantine_dir = self.directory + ".corrupt"

    def step_dir(self, epoch: int) -> str:
        """The directory of the checkpoint of `epoch`."""
        return os.path.join(self.directory, str(int(epoch)))

    def verify(self, epoch: int) -> str | None:
        """None if the checkpoint of `epoch` is intact, else why not (a sentence)."""
        if not self.verified:
            return None
        return verify_checkpoint(self.step_dir(epoch))

    def set_aside(self, epoch: int) -> str:
        """Moves a bad checkpoint to `<directory>.corrupt/<epoch>[.n]` (never deletes)."""
        os.makedirs(self.quarantine_dir, exist_ok=True)
        dest = os.path.join(self.quarantine_dir, str(int(epoch)))
        n = 1
        while os.path.exists(dest):
            dest = os.path.join(self.quarantine_dir, f"{int(epoch)}.{n}")
            n += 1
        os.replace(self.step_dir(epoch), dest)
        self._manager.reload()
        return dest

    def restore_latest_intact(self, state_like: PyTree) -> Checkpoint | None:
        """Restores the newest intact checkpoint; None if there is no checkpoint at all.

        Bad checkpoints newer than it are moved aside (see `set_aside`) with a warning
        naming each and why it is bad.

        Raises:
            CheckpointCorruptError: If there are checkpoints but none is intact (nothing is
                moved then), naming the directory and each checkpoint's fault.
        """
        epochs = self.epochs()
        if not epochs:
            return None
        faults: list[tuple[int, str]] = []
        for epoch in reversed(epochs):
            fault = self.verify(epoch)
            if fault is None:
                try:
                    restored = self.restore(state_like, epoch)
                except CheckpointCorruptError as err:
                    fault = str(err)
                else:
                    for bad_epoch, bad_fault in faults:
                        dest = self.set_aside(bad_epoch)
                        warnings.warn(
                            f"Checkpoint of epoch {bad_epoch} in {self.directory} is corrupt "
                            f"({bad_fault}); moved aside to {dest}; resuming from the newest "
                            f"intact checkpoint, epoch {epoch}.",
                            stacklevel=2,
                        )
                    return restored
            faults.append((epoch, fault))
        listed = "; ".join(f"epoch {e}: {f}" for e, f in faults)
        raise CheckpointCorruptError(
            f"No intact checkpoint in {self.directory} ({listed}). Nothing was moved or "
            "deleted; start a new run (another output directory) or restore the files."
        )

    def epochs(self) -> list[int]:
        """The epochs that have a complete checkpoint, ascending."""
        return sorted(self._manager.all_steps())

    def latest_epoch(self) -> int | None:
        """The latest checkpointed epoch, or None if there is none."""
        return self._manager.latest_step()

    def save(
        self, epoch: int, state: PyTree, key: Any, *, config: dict[str, Any] | None = None
    ) -> None:
        """Writes the checkpoint of `epoch` (blocking until it is on disk).

        Args:
            epoch: Number of completed epochs (>= 0); the checkpoint's name.
            state: The state pytree (e.g. a `TrainState`) of device or host arrays.
            key: The run's base PRNG key (typed or raw); saved as `jax.random.key_data`.
            config: A JSON-serialisable dict saved alongside (e.g. hyperparameters).

        Raises:
            ValueError: If `epoch` is negative or already has a checkpoint.
            TypeError: If `key` is not a PRNG key or `config` is not JSON-serialisable.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise ValueError(f"`epoch` must be an int >= 0, got {epoch!r}.")
        epoch = int(epoch)
        if epoch in self._manager.all_steps():
            raise ValueError(f"`epoch` {epoch} already has a checkpoint in {self.directory}.")
        key = as_typed_key(key)
        meta = {
            "format": _FORMAT_VERSION,
            "epoch": epoch,
            "key_impl": str(jax.random.key_impl(key)),
            "key_data": np.asarray(jax.random.key_data(key)).tolist(),
            "config": check_json(config),
        }
        self._manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )
        self._manager.wait_until_finished()
        _fault_delay("before_manifest")
        if self.verified:
            # Several processes save one checkpoint together: every process's files must be
            # final before process 0 hashes them, and no process may go on (and perhaps
            # restore) before the manifest exists.
            _barrier(f"vi_jax_checkpoint_{epoch}_saved")
            if jax.process_index() == 0:
                write_manifest(self.step_dir(epoch), epoch)
            _barrier(f"vi_jax_checkpoint_{epoch}_manifest")
        _fault_delay("after_manifest")

    def restore(self, state_like: PyTree, epoch: int | None = None) -> Checkpoint:
        """Reads a checkpoint onto the structure of `state_like`.

        Args:
            state_like: A pytree with the structure, shapes and dtypes of the saved state
                (concrete arrays or `jax.ShapeDtypeStruct` objects); restored arrays take its
                shardings (e.g. replicated over a mesh).
            epoch: Which checkpoint (default: the latest).

        Returns:
            The `Checkpoint` (epoch, state, base key, config).

        Raises:
            FileNotFoundError: If there is no checkpoint (for `epoch`).
            CheckpointCorruptError: If the checkpoint fails its integrity check or cannot
                be read (the message names the checkpoint and the fault).
        """
        if epoch is None:
            epoch = self.latest_epoch()
            if epoch is None:
                raise FileNotFoundError(f"No checkpoint in {self.directory}.")
        elif epoch not in self._manager.all_steps():
            raise FileNotFoundError(
                f"No checkpoint for `epoch` {epoch} in {self.directory}; "
                f"available: {self.epochs()}."
            )
        where = self.step_dir(epoch)
        if self.verified:
            fault = verify_checkpoint(where)
            if fault is not None:
                raise CheckpointCorruptError(f"Checkpoint {where} is corrupt: {fault}.")
        else:
            warnings.warn(
                f"Checkpoint {where} has no checksum manifest (written by an older vi_jax): "
                "restored unverified.",
                stacklevel=2,
            )
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
        try:
            restored = self._manager.restore(
                epoch,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
            meta = restored["meta"]
            key = jax.random.wrap_key_data(
                jnp.asarray(np.asarray(meta["key_data"], dtype=np.uint32)), impl=meta["key_impl"]
            )
        except (ValueError, TypeError, KeyError, OSError) as err:
            # Verified files that do not restore onto `state_like`: a different model.
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"Checkpoint {where} could not be restored onto `state_like` (a different "
                f"model or settings than the run's?): {type(err).__name__}: {first}"
            ) from err
        state = restored["state"]
        if jax.tree.structure(state) != jax.tree.structure(state_like):
            raise ValueError(
                f"Checkpoint {epoch} in {self.directory} restored a pytree of structure "
                f"{jax.tree.structure(state)}, not that of `state_like` "
                f"{jax.tree.structure(state_like)}."
            )
        return Checkpoint(
            epoch=int(meta["epoch"]), state=state, key=key, config=dict(meta["config"])
        )

    def close(self) -> None:
        """Releases the underlying orbax manager."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def save_checkpoint(
    directory: str | os.PathLike[str],
    epoch: int,
    state: PyTree,
    key: Any,
    *,
    config: dict[str, Any] | None = None,
    max_to_keep: int | None = 3,
) -> None:
    """One-shot `Checkpointer(directory, max_to_keep=...).save(epoch, state, key, config=...)`."""
    with Checkpointer(directory, max_to_keep=max_to_keep) as ckpt:
        ckpt.save(epoch, state, key, config=config)


def restore_checkpoint(
    directory: str | os.PathLike[str], state_like: PyTree, epoch: int | None = None
) -> Checkpoint:
    """One-shot `Checkpointer(directory).restore(state_like, epoch)` (default: latest)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No checkpoint directory {os.fspath(directory)!r}.")
    with Checkpointer(directory, max_to_keep=None) as ckpt:
        return ckpt.restore(state_like, epoch)


def restore_latest_intact(directory: str | os.PathLike[str], state_like: PyTree) -> Checkpoint:
    """One-shot `Checkpointer(directory).restore_latest_intact(state_like)`.

    Raises:
        FileNotFoundError: If there is no checkpoint in `directory`.
        CheckpointCorruptError: If none of them is intact.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No checkpoint directory {os.fspath(directory)!r}.")
    with Checkpointer(directory, max_to_keep=None) as ckpt:
        restored = ckpt.restore_latest_intact(state_like)
    if restored is None:
        raise FileNotFoundError(f"No checkpoint in {os.fspath(directory)}.")
    return restored


def latest_epoch(directory: str | os.PathLike[str]) -> int | None:
    """The latest checkpointed epoch in `directory`, or None (also if it does not exist)."""
    if not os.path.isdir(directory):
        return None
    with Checkpointer(directory, max_to_keep=None) as ckpt:
        return ckpt.latest_epoch()
