"""Data parallelism over a one-axis device mesh: batches sharded, state replicated.

The same training code runs on one device (`mesh=None` or a 1-device mesh) and on N
devices. With a mesh, the data set and the training state are replicated on every device;
inside the compiled epoch each batch's index array is sharded along the mesh axis
`"data"`, so every device gathers its own slice of the batch from its local copy of the
data (no communication), computes its part of the loss, and XLA all-reduces the gradient.
Multi-host runs call `jax.distributed.initialize()` first; `jax.devices()` then lists the
devices of all hosts.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vi_jax._validation import check_positive_int
from vi_jax.types import PyTree

DATA_AXIS = "data"


def make_data_mesh(num_devices: int | None = None) -> Mesh:
    """Builds a one-axis mesh named `"data"` over the first `num_devices` devices.

    Args:
      num_devices: how many devices to use (default: all of `jax.devices()`). On CPU,
        set `XLA_FLAGS=--xla_force_host_platform_device_count=8` before importing
        jax to get 8 devices.

    Returns:
      A `jax.sharding.Mesh` with axis `"data"` of size `num_devices` (axis type Auto, so
      that the compiler partitions the computation).

    Raises:
      ValueError: if `num_devices` is < 1 or more than there are devices.
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    num_devices = check_positive_int(num_devices, "num_devices")
    if num_devices > len(devices):
        raise ValueError(
            f"`num_devices` is {num_devices} but only {len(devices)} device(s) are available "
            f"({devices[0].platform}). On CPU, set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax."
        )
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def check_mesh(mesh: Any, name: str = "mesh") -> Mesh:
    """Validates a data-parallel mesh; returns it with Auto axis types.

    Explicit-mode meshes (the default of `jax.make_mesh`) are rebuilt over the same
    devices with Auto axes: the trainer places batches with sharding constraints, which
    only apply to Auto axes.

    Raises:
      TypeError: if `mesh` is not a `jax.sharding.Mesh`.
      ValueError: if it has no axis named `"data"`.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`{name}` must be a jax.sharding.Mesh or None, got {type(mesh).__name__}.")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"`{name}` must have an axis named {DATA_AXIS!r} (the batch axis), "
            f"got axes {mesh.axis_names}. Use make_data_mesh()."
        )
    if any(t != AxisType.Auto for t in mesh.axis_types):
        mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)
    return mesh


def data_parallel_size(mesh: Mesh | None) -> int:
    """Number of shards of the batch axis: the size of mesh axis `"data"` (1 without mesh)."""
    return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def check_batch_divisible(
    batch_size: int, mesh: Mesh | None, name: str = "batch_size", hint: str = ""
) -> None:
    """Raises ValueError unless `batch_size` is divisible by the mesh's `"data"` size."""
    n = data_parallel_size(mesh)
    if batch_size % n != 0:
        raise ValueError(
            f"`{name}` ({batch_size}) must be divisible by the number of devices on the "
            f"{DATA_AXIS!r} mesh axis ({n}) so that every device gets an equal share.{hint}"
        )


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a full copy of an array on every device of `mesh`."""
    return NamedSharding(check_mesh(mesh), P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding that splits an array's leading (batch) axis over mesh axis `"data"`."""
    return NamedSharding(check_mesh(mesh), P(DATA_AXIS))


def replicate(tree: PyTree, mesh: Mesh | None = None) -> PyTree:
    """Places every array of `tree` in full on every device of `mesh`.

    Args:
      tree: A pytree of arrays (parameters, optimiser state, a data set).
      mesh: A data mesh; None puts the arrays on the default device.

    Returns:
      The same pytree as device arrays (already placed arrays are not copied).
    """
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, replicated_sharding(mesh))


def shard_batch(tree: PyTree, mesh: Mesh | None = None) -> PyTree:
    """Splits the leading (batch) axis of every array of `tree` over mesh axis `"data"`.

    Args:
      tree: A pytree of arrays, each of shape `[batch, ...]`.
      mesh: A data mesh; None puts the arrays on the default device.

    Returns:
      The same pytree as device arrays sharded `P("data")` on their leading axis.

    Raises:
      ValueError: if a leaf is a scalar or its leading axis is not divisible by the
        number of devices on the `"data"` axis.
    """
    if mesh is None:
        return jax.device_put(tree)
    sharding = batch_sharding(mesh)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(leaf)
        where = f"`tree{jax.tree_util.keystr(path)}`"
        if len(shape) == 0:
            raise ValueError(f"{where} is a scalar; a batch leaf needs a leading axis.")
        n = data_parallel_size(mesh)
        if shape[0] % n != 0:
            raise ValueError(
                f"The leading (batch) axis of {where} ({shape[0]}) must be divisible by the "
                f"number of devices on the {DATA_AXIS!r} mesh axis ({n})."
            )
    return jax.device_put(tree, sharding)


def _on_mesh(leaf: Any, mesh: Mesh) -> bool:
    sharding = getattr(leaf, "sharding", None)
    return (
        isinstance(sharding, NamedSharding)
        and sharding.mesh.devices.shape == mesh.devices.shape
        and all(a == b for a, b in zip(sharding.mesh.devices.flat, mesh.devices.flat, strict=True))
    )


def place_data(tree: PyTree, mesh: Mesh | None = None) -> PyTree:
    """Replicates a data set over `mesh`, leaving arrays already laid out on it alone.

    A data set that `shard_rows` split over the mesh (each device, or each process in a
    multi-host run, holding only its rows) keeps that layout: replicating it would copy
    every row to every device, which is what per-host sharding exists to avoid.

    Args:
      tree: A pytree of arrays `[N, ...]`.
      mesh: A data mesh; None puts the arrays on the default device.

    Returns:
      The same pytree as device arrays: the leaves already on `mesh` unchanged, the
      others replicated.
    """
    if mesh is None:
        return jax.device_put(tree)
    mesh = check_mesh(mesh)
    return jax.tree.map(
        lambda leaf: (
            leaf if _on_mesh(leaf, mesh) else jax.device_put(leaf, replicated_sharding(mesh))
        ),
        tree,
    )


def shard_rows(x: np.ndarray, mesh: Mesh) -> jax.Array:
    """Lays the rows of a host array out over mesh axis `"data"`; each process keeps its own.

    Every process passes the same `x` (loaded deterministically); only the rows that
    belong to this process's devices are copied to devices, so device memory holds
    `N / data_parallel_size(mesh)` rows per device and no device holds the whole set.

    Args:
      x: `[N, ...]` host array, identical on every process.
      mesh: A data mesh; `N` must be divisible by its `"data"` size.

    Returns:
      A global `jax.Array` `[N, ...]` sharded `P("data")`.

    Raises:
      ValueError: if `N` is not divisible by the number of devices on the mesh.
    """
    mesh = check_mesh(mesh)
    n = data_parallel_size(mesh)
    if np.shape(x)[0] % n:
        raise ValueError(
            f"The number of training examples ({np.shape(x)[0]}) must be divisible by the "
            f"number of devices ({n}) to shard the data set over them; choose "
            "`train_examples` (--train-examples) accordingly."
        )
    x = np.asarray(x)
    # The callback is asked only for the slices of this process's devices.
    return jax.make_array_from_callback(x.shape, batch_sharding(mesh), lambda index: x[index])


def resident_rows(x: jax.Array) -> int:
    """Rows of `x` held in this process's device memory, every copy counted.

    A data set replicated over 4 local devices counts `4 N`; one sharded over a
    2-process, 4-device mesh counts `N / 2` on each process.
    """
    return sum(int(s.data.shape[0]) for s in x.addressable_shards)
