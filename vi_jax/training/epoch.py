"""One training epoch compiled as a single program: `make_epoch_fn` and `EpochFn`.

An epoch is one compiled program: the data set stays on the device, a permutation is drawn
inside, batches are gathered from it inside one compiled loop (a `lax.while_loop`, the
loop `lax.scan` lowers to, so that it can stop at a non-finite step), and the host is touched
once per epoch (by `fit`, in `vi_jax/training/loop.py`).

Randomness is a pure function of the epoch's key, so that a resumed run is bit-identical
to an uninterrupted one: `perm_key, steps_key = split(epoch_key)`, the order of the
examples is `permutation(perm_key, num_examples)`, and step `i` (0-based within the epoch)
uses `preprocess_key, step_key = split(fold_in(steps_key, i))`: `preprocess(preprocess_key,
batch)` and `train_step(state, batch, step_key)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vi_jax._validation import check_callable, check_choice, check_positive_int
from vi_jax.training._keys import as_typed_key
from vi_jax.training.sharding import (
    batch_sharding,
    check_batch_divisible,
    check_mesh,
    place_data,
    replicate,
    replicated_sharding,
)
from vi_jax.training.step import tree_select
from vi_jax.types import Array, GuardedStep, PyTree, TrainStep

Preprocess = Callable[[Array, PyTree], PyTree]


class EpochMetrics(NamedTuple):
    """What a compiled epoch reports.

    Attributes:
      metrics: per-step metrics stacked to shape `[num_steps]` (including `"finite"`,
        bool `[num_steps]`); the host averages them.
      all_finite: bool `[]`: whether every step of the epoch was finite. The epoch stops
        at the first non-finite step, so the returned state is the one just before that
        step; the steps after it do not run and report NaN (0 for integer metrics,
        False for `finite`).
    """

    metrics: dict[str, Array]
    all_finite: Array


def num_examples_of(data: PyTree, name: str = "data") -> int:
    """The common leading-axis size `N` of every array in `data`, validated.

    Raises:
      ValueError: if `data` has no arrays, a scalar leaf, or leading axes that differ.
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
    # The program that runs first under check="epoch": no per-step guard, a check of the
    # state at the end, and a rerun with the guarded program when that fails.
    optimistic: bool = False

    @property
    def runs_unchecked(self) -> bool:
        """Whether the epoch runs a `GuardedStep`'s `unchecked` form (optimistic only)."""
        return self.optimistic and isinstance(self.train_step, GuardedStep)


CHECKS = ("epoch", "step")


def _has_unchecked_form(train_step: TrainStep) -> bool:
    """Whether an epoch of `train_step` can run without a per-step guard (see `_epoch_step`)."""
    if isinstance(train_step, GuardedStep):
        return train_step.unchecked is not None
    return True


def _tree_all_finite(tree: PyTree) -> Array:
    """Whether every floating-point entry of `tree` is finite: a bool `[]`."""
    leaves = [
        jnp.ravel(x)
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    if not leaves:
        return jnp.asarray(True)
    flat = jnp.concatenate(leaves) if len(leaves) > 1 else leaves[0]
    # One reduction over one concatenation: a test per leaf added 0.25 s to the 1.3 s
    # compile of the default VAE's epoch (30 float leaves, 2-core CPU). `x - x` is 0 where x is
    # finite and NaN where it is not, and a sum of zeros cannot overflow.
    return jnp.isfinite(jnp.sum(flat - flat))


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
    train_step = plan.train_step.unchecked if plan.runs_unchecked else plan.train_step
    new_state, metrics = train_step(state, batch, step_key)
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
    # finite, at no cost; any other step gets a select here, unless the epoch is
    # optimistic (then a non-finite step makes the whole epoch run again, guarded).
    self_guarded = plan.optimistic or isinstance(plan.train_step, GuardedStep)

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
    if plan.runs_unchecked:
        # The unchecked step tests only its loss; a non-finite gradient shows in the state
        # it leaves (a NaN or inf gradient makes Adam's, SGD's, ... update non-finite).
        ok = ok & _tree_all_finite(state)
    return state, EpochMetrics(metrics=metrics, all_finite=ok)


_run_epoch = jax.jit(_epoch, static_argnums=0)
_run_epoch_donating = jax.jit(_epoch, static_argnums=0, donate_argnums=1)


class EpochFn:
    """One training epoch compiled as a single program; build it with `make_epoch_fn`.

    Call it as `epoch(state, data, key) -> (state, EpochMetrics)`. The state's buffers may
    be donated (when `donate`), so do not use the `state` passed in afterwards. `lower(state,
    data, key)` gives the lowered program that runs first (HLO, ahead-of-time compilation).

    Attributes:
      batch_size: examples per step.
      num_examples: the `N` of the data set it was built for.
      num_steps: steps per epoch: `N // batch_size`, plus one if the remainder is kept.
      mesh: the data mesh, or None for one device.
      check: `"epoch"` or `"step"`, where non-finite steps are looked for (see
        `make_epoch_fn`).
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
        check: str = "epoch",
    ):
        check_callable(train_step, "train_step")
        check_choice(check, CHECKS, "check")
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
        self.check = check
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
        # With nothing to leave out (a guarded step without an unchecked form) the
        # optimistic program would be the guarded one: run that at once.
        self._optimistic_plan = (
            self._plan._replace(optimistic=True)
            if check == "epoch" and _has_unchecked_form(train_step)
            else None
        )

    def lower(self, state: PyTree, data: PyTree, key: Any) -> jax.stages.Lowered:
        """Lowers the epoch for these arguments (inspect its HLO or `.compile()` it)."""
        if self.mesh is not None:
            state, data = replicate(state, self.mesh), place_data(data, self.mesh)
        if self._optimistic_plan is not None:
            return _run_epoch.lower(self._optimistic_plan, state, data, as_typed_key(key))
        return self._jitted.lower(self._plan, state, data, as_typed_key(key))

    def __call__(self, state: PyTree, data: PyTree, key: Any) -> tuple[PyTree, EpochMetrics]:
        """Runs one epoch.

        Args:
          state: the training state (e.g. a `TrainState`); donated.
          data: A pytree of device arrays with leading axis `[num_examples]` (numpy
            arrays work but are copied to the device on every call).
          key: the epoch's PRNG key (typed or raw).

        Returns:
          `(state, EpochMetrics)`; metrics have shape `[num_steps]`. With `check="epoch"`
          the call waits for the epoch to finish (it reads `all_finite` to decide whether
          to run the epoch again).
        """
        n = num_examples_of(data)
        if n != self.num_examples:
            raise ValueError(
                f"`data` has {n} examples but this epoch function was built for "
                f"`num_examples` = {self.num_examples}."
            )
        key = as_typed_key(key)
        if self.mesh is not None:
            state, data = replicate(state, self.mesh), place_data(data, self.mesh)
        if self._optimistic_plan is not None:
            # Not donated: `state` is where the guarded rerun starts.
            new_state, out = _run_epoch(self._optimistic_plan, state, data, key)
            if bool(jax.device_get(out.all_finite)):
                return new_state, out
            del new_state, out
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
    check: str = "epoch",
) -> EpochFn:
    """Compiles one epoch of `train_step` as a single loop over shuffled batches.

    The epoch draws a permutation of the `num_examples` examples from its key, gathers each
    batch of indices from the on-device `data` inside the loop, optionally applies
    `preprocess(key, batch)` on the device, and calls `train_step(state, batch, key)`
    (keys as described in the module docstring). The loop stops after the first
    non-finite step and returns the state from before it: a step made by
    `make_train_step` leaves the state unchanged itself; for any other step the epoch
    discards that step's state.

    Where that is checked is `check`. With `"step"`, every step is guarded as it runs:
    `make_train_step`'s step computes the global gradient norm and skips a non-finite
    update; any other step's state goes through a select. With `"epoch"` (default) the
    epoch first runs without a per-step guard (`make_train_step`'s `unchecked` form: no
    gradient norm, so its metrics have no `"grad_norm"`), stopping at a non-finite loss,
    and checks once at the end that every step was finite and, for a `make_train_step`
    step, that every floating-point entry of the final state is; if not, it runs the
    epoch again from the same state and key with the per-step guard and returns that
    run. Both give the same result, up to floating-point rounding of the two programs;
    `"epoch"` spares the per-step guard (6-24% of a small step on 2-core CPUs,
    `benchmarks/training_speed.py`) at the price of keeping the input state alive during
    the epoch (it is not donated to the first run) and of a second run of an epoch that
    fails. Use `"step"` for the per-step `"grad_norm"` metric, or for an optimiser that
    can turn a non-finite gradient into a finite state (e.g. a pure sign update, or a
    mask that zeroes the gradient of frozen parameters), which only the per-step check
    sees.

    Args:
      train_step: `train_step(state, batch, key) -> (state, metrics)`, e.g. from
        `make_train_step`; `metrics` is a dict of scalars with `"loss"` and optionally
        a bool `"finite"` (default: whether the loss is finite).
      batch_size: examples per step, 1 <= batch_size <= num_examples; with a mesh,
        divisible by the number of devices on its `"data"` axis.
      num_examples: `N`, the leading-axis size of every array of `data`.
      drop_remainder: whether to drop the last `N % batch_size` examples of each
        permutation (True) or train on them as one smaller final step (False; with a
        mesh the remainder must also be divisible by the number of devices).
      preprocess: optional `preprocess(key, batch) -> batch`, applied per batch on the
        device (e.g. dynamic binarisation).
      mesh: A data mesh (`make_data_mesh`) for data parallelism, or None for one device.
      donate: whether to donate the input state's buffers to the guarded run (saves
        memory and copies).
      check: `"epoch"` (default) or `"step"`: when non-finite steps are looked for (see
        above).

    Returns:
      An `EpochFn`: `epoch(state, data, key) -> (state, EpochMetrics)` with per-step
      metrics of shape `[num_steps]`.

    Raises:
      ValueError: if `batch_size` is out of range or not divisible by the mesh size, or
        `check` is not "epoch" or "step".
      TypeError: if `train_step`/`preprocess` is not callable or `mesh` is not a Mesh.
    """
    return EpochFn(
        train_step,
        batch_size=batch_size,
        num_examples=num_examples,
        drop_remainder=drop_remainder,
        preprocess=preprocess,
        mesh=mesh,
        donate=donate,
        check=check,
    )
