"""Training: optax steps, compiled epochs, the fit loop, checkpoints and data parallelism.

Model-agnostic: everything works on any parameter pytree and any
`loss_fn(params, batch, key) -> (loss, aux)`; nothing here imports the models or Flax.
"""

from vi_jax.training.checkpoint import (
    Checkpoint,
    CheckpointCorruptError,
    Checkpointer,
    latest_epoch,
    restore_checkpoint,
    restore_latest_intact,
    save_checkpoint,
)
from vi_jax.training.epoch import EpochFn, EpochMetrics, make_epoch_fn
from vi_jax.training.loop import FitResult, NonFiniteLossError, fit
from vi_jax.training.schedules import burda_num_epochs, burda_schedule
from vi_jax.training.sharding import (
    DATA_AXIS,
    make_data_mesh,
    replicate,
    shard_batch,
)
from vi_jax.training.state import TrainState, init_train_state
from vi_jax.training.step import apply_if, make_train_step, tree_select

__all__ = [
    "DATA_AXIS",
    "Checkpoint",
    "CheckpointCorruptError",
    "Checkpointer",
    "EpochFn",
    "EpochMetrics",
    "FitResult",
    "NonFiniteLossError",
    "TrainState",
    "fit",
    "init_train_state",
    "latest_epoch",
    "make_data_mesh",
    "make_epoch_fn",
    "make_train_step",
    "replicate",
    "restore_checkpoint",
    "restore_latest_intact",
    "save_checkpoint",
    "shard_batch",
    "tree_select",
    "apply_if",
    "burda_num_epochs",
    "burda_schedule",
]
