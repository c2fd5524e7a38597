"""Learning-rate schedules of published training protocols, as optax schedules."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from vi_jax._validation import check_positive_float, check_positive_int
from vi_jax.types import Array


def burda_schedule(
    learning_rate: float, steps_per_epoch: int, num_stages: int = 8
) -> optax.Schedule:
    """The schedule of Burda, Grosse & Salakhutdinov (2016): 3^i epochs at lr 10^(-i/7).

    Stage `i = 0 .. num_stages - 1` lasts `3**i` passes over the data at
    `learning_rate * 10**(-i / 7)`; with the paper's 8 stages that is 3280 passes, and
    the rate falls from 1e-3 to 1e-4 for the paper's `learning_rate = 1e-3`. After the
    last stage the rate stays at the last stage's value.

    Args:
      learning_rate: the stage-0 rate, > 0.
      steps_per_epoch: optimiser steps per pass over the data, >= 1.
      num_stages: number of stages, >= 1.

    Returns:
      An optax schedule `count -> learning rate` (a float32 scalar `[]`).

    Raises:
      ValueError: if an argument is out of range.
    """
    learning_rate = check_positive_float(learning_rate, "learning_rate")
    steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
    num_stages = check_positive_int(num_stages, "num_stages")
    # Step counts at which stages 1, 2, ... begin (int64 on the host: 3**i * steps can
    # pass 2**31 for long schedules; they are clipped into int32 for the comparison).
    ends = np.cumsum([3**i for i in range(num_stages - 1)], dtype=np.int64) * steps_per_epoch
    ends = jnp.asarray(np.minimum(ends, np.iinfo(np.int32).max), jnp.int32)
    rates = jnp.asarray(learning_rate * 10.0 ** (-np.arange(num_stages) / 7.0), jnp.float32)

    def schedule(count: Array) -> Array:
        stage = jnp.sum(jnp.asarray(count, jnp.int32) >= ends)
        return rates[stage]

    return schedule


def burda_num_epochs(num_stages: int = 8) -> int:
    """Passes over the data of `burda_schedule` with `num_stages` stages: (3^n - 1) / 2."""
    num_stages = check_positive_int(num_stages, "num_stages")
    return (3**num_stages - 1) // 2
