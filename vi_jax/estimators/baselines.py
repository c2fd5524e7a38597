"""The moving-average baseline: one small state object, carried across training steps.

A baseline b subtracted from the learning signal of a score-function estimator,
(f(z) - b) grad log q(z), keeps it unbiased whenever b does not depend on this step's
samples; an exponential moving average of past signals is the usual choice. The state is
a pytree (it goes through `jax.jit`, `jax.lax.scan` and checkpoints); its settings are
static pytree metadata:

    avg = MovingAverage.init(decay=0.99)
    for step ...:
        surrogate = elbo_score_function(key, log_joint, q, K, baseline=avg)
        avg = avg.update(jnp.mean(surrogate))    # after the step: b never sees its samples

Zero-debiasing divides the average (started at 0) by the weight it has accumulated,
1 - prod_i d_i, so that it is an unbiased weighted mean of the observations from the very
first step. optax's removed `moving_avg_baseline` divided the *stored, already debiased*
value again at every step, so its estimate blew up: from 0 with a constant observation 6
at decay 0.9 it gave 6, 31.6, 107, ...; this one gives 6, 6, 6. optax's early-training
heuristic (decay_i = min(decay, (1 + i) / (10 + i)), on by default there) is available as
`early_decay_heuristic=True`; the debiasing accounts for the varying decay.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vi_jax._validation import is_concrete
from vi_jax.types import Array

sg = jax.lax.stop_gradient


def _check_decay(decay: float) -> float:
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0.0 <= decay < 1.0:
        raise ValueError(f"`decay` must be a float in [0, 1), got {decay!r}.")
    return float(decay)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MovingAverage:
    """State of an exponential moving average, scalar or `[*batch]`.

    Build it with `MovingAverage.init`, read the baseline with `value()`, advance it with
    `update(observation)` (which returns a new state; observations are held constant).

    Attributes:
      average: the raw average (biased towards its initial value when zero-debiased),
        scalar or `[*batch]`.
      count: number of updates so far (int32 scalar).
      decay_product: prod_i d_i over the updates so far (1 at the start); the raw
        average puts weight 1 - decay_product on the observations.
      decay: d in [0, 1) (static).
      zero_debias: if True, `value()` is average / (1 - decay_product) (static).
      early_decay_heuristic: if True, update i uses min(decay, (1 + i) / (10 + i)),
        optax's early-training heuristic (static).
    """

    average: Array
    count: Array
    decay_product: Array
    decay: float = dataclasses.field(default=0.99, metadata={"static": True})
    zero_debias: bool = dataclasses.field(default=True, metadata={"static": True})
    early_decay_heuristic: bool = dataclasses.field(default=False, metadata={"static": True})

    @classmethod
    def init(
        cls,
        shape: tuple[int, ...] = (),
        *,
        decay: float = 0.99,
        zero_debias: bool = True,
        early_decay_heuristic: bool = False,
        initial_value: float | Array = 0.0,
        dtype=None,
    ) -> MovingAverage:
        """A fresh state.

        Args:
          shape: shape of the average: `()` or `[*batch]` (one baseline per data point).
          decay: d in [0, 1); 0.99 as in optax.
          zero_debias: divide out the weight still on the initial value, which must
            then be 0.
          early_decay_heuristic: optax's min(decay, (1 + i) / (10 + i)) for update i.
          initial_value: the starting average (the baseline before any update).
          dtype: float dtype of the average (default: JAX's default float).

        Returns:
          A `MovingAverage` with `count = 0`.
        """
        decay = _check_decay(decay)
        average = jnp.broadcast_to(jnp.asarray(initial_value, dtype=dtype), shape)
        if zero_debias and is_concrete(average) and bool(jnp.any(average != 0)):
            raise ValueError(
                "`initial_value` must be 0 with `zero_debias=True` (debiasing divides out "
                "the weight on a zero start); pass `zero_debias=False` to start elsewhere."
            )
        if not jnp.issubdtype(average.dtype, jnp.floating):
            average = average.astype(jnp.result_type(float))
        return cls(
            average=average,
            count=jnp.zeros((), jnp.int32),
            decay_product=jnp.ones((), average.dtype),
            decay=decay,
            zero_debias=bool(zero_debias),
            early_decay_heuristic=bool(early_decay_heuristic),
        )

    def step_decay(self) -> Array:
        """The decay the next `update` uses (a scalar)."""
        decay = _check_decay(self.decay)
        if self.early_decay_heuristic:
            i = self.count.astype(self.average.dtype)
            return jnp.minimum(decay, (1.0 + i) / (10.0 + i))
        return jnp.asarray(decay, self.average.dtype)

    def value(self) -> Array:
        """The baseline: the (debiased) average, with no gradient; same shape as `average`.

        Before any update it is the initial value (0 by default).
        """
        if not self.zero_debias:
            return sg(self.average)
        weight = 1.0 - self.decay_product
        seen = weight > 0
        return sg(jnp.where(seen, self.average / jnp.where(seen, weight, 1.0), self.average))

    def update(self, observation: Array) -> MovingAverage:
        """The state after observing `observation` (held by stop_gradient).

        Args:
          observation: scalar or broadcastable to `average`, e.g. this step's mean
            learning signal.

        Returns:
          The new `MovingAverage`: average <- d_i * average + (1 - d_i) * observation.
        """
        d = self.step_decay()
        average = d * self.average + (1.0 - d) * sg(jnp.asarray(observation, self.average.dtype))
        return dataclasses.replace(
            self,
            average=jnp.broadcast_to(average, jnp.shape(self.average)),
            count=self.count + 1,
            decay_product=self.decay_product * d,
        )


def baseline_value(baseline: MovingAverage | Array | float | None) -> Array | float:
    """The number a `baseline=` argument stands for: 0 for None, `value()` for a state."""
    if baseline is None:
        return 0.0
    if isinstance(baseline, MovingAverage):
        return baseline.value()
    return sg(baseline)


def moving_average_init(shape: tuple[int, ...] = ()) -> MovingAverage:
    """Alias kept for older code: `MovingAverage.init(shape)` (decay 0.99, debiased)."""
    return MovingAverage.init(shape)


def moving_average_baseline(
    state: MovingAverage, observation: Array, decay: float | None = None
) -> tuple[Array, MovingAverage]:
    """Alias kept for older code: updates `state`, returns `(new.value(), new)`.

    Args:
      state: current `MovingAverage`.
      observation: new value(s) (held constant).
      decay: if given, replaces the state's decay for this and later updates.

    Returns:
      `(baseline, new_state)`; the first baseline from a fresh state is the observation.
    """
    if decay is not None:
        state = dataclasses.replace(state, decay=_check_decay(decay))
    new = state.update(observation)
    return new.value(), new
