"""Atomic orbax checkpoints of a training state, its epoch, its PRNG key and a config.

One checkpoint per saved epoch under `directory/<epoch>/`, written by orbax's
`CheckpointManager` (atomically: a checkpoint appears only once it is complete), with two
items: `state` (the state pytree, arrays bit-exact) and `meta` (JSON: the epoch, the
PRNG key's implementation and raw `jax.random.key_data`, and a user config).
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vi_jax._validation import check_positive_int
from vi_jax.training._keys import as_typed_key
from vi_jax.types import PyTree

_FORMAT_VERSION = 1


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
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
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


def latest_epoch(directory: str | os.PathLike[str]) -> int | None:
    """The latest checkpointed epoch in `directory`, or None (also if it does not exist)."""
    if not os.path.isdir(directory):
        return None
    with Checkpointer(directory, max_to_keep=None) as ckpt:
        return ckpt.latest_epoch()
