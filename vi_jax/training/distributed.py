"""Multi-host start-up on JAX's multi-controller runtime (`jax.distributed`).

Every process runs the same program. `initialize` connects it to the others before
anything touches a device; afterwards `jax.devices()` lists the devices of all
processes, a mesh over them spans the hosts, and collectives (the gradient all-reduce)
cross them (NCCL on GPU, gloo on CPU). Under SLURM or on Cloud TPU, JAX detects the
cluster itself: call `initialize(auto=True)` with no addresses.
"""

from __future__ import annotations

import re
import socket
import time

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from vi_jax._validation import check_positive_int
from vi_jax.training.sharding import DATA_AXIS

_ADDRESS = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:(\d{1,5})$")


class DistributedInitError(RuntimeError):
    """The processes of a multi-host run could not connect (e.g. coordinator unreachable)."""


def check_process_args(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> tuple[str, int, int]:
    """Validates `--coordinator HOST:PORT --num-processes P --process-id I`.

    Raises:
      ValueError: naming the argument: a missing one, an address that is not
        `HOST:PORT`, `P < 1`, or `I` outside `[0, P)`.
    """
    given = {
        "coordinator": coordinator,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    missing = [f"`{k}`" for k, v in given.items() if v is None]
    if missing:
        raise ValueError(
            "A multi-host run needs `coordinator`, `num_processes` and `process_id` together "
            f"(or none of them, with cluster auto-detection); missing {', '.join(missing)}."
        )
    assert coordinator is not None and num_processes is not None and process_id is not None
    match = _ADDRESS.match(coordinator)
    if not match or not 0 < int(match.group(1)) < 65536:
        raise ValueError(
            f"`coordinator` must be HOST:PORT (e.g. 10.0.0.1:1234), got {coordinator!r}."
        )
    num_processes = check_positive_int(num_processes, "num_processes")
    if isinstance(process_id, bool) or not isinstance(process_id, int):
        raise TypeError(f"`process_id` must be an int, got {type(process_id).__name__}.")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"`process_id` must be in [0, {num_processes}) for `num_processes` = "
            f"{num_processes}, got {process_id}."
        )
    return coordinator, num_processes, process_id


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    timeout_s: int = 120,
) -> None:
    """Joins this process to a multi-host run; call it before anything touches a device.

    Args:
      coordinator: `HOST:PORT` of process 0, which serves the coordination service.
      num_processes: `P`, the number of processes in the run.
      process_id: `I` in `[0, P)`, this process's rank.
      auto: let JAX detect the cluster (SLURM, Open MPI, Cloud TPU) instead; the three
        arguments above must then be None.
      timeout_s: seconds to wait for all processes to connect before giving up.

    Raises:
      ValueError / TypeError: on bad arguments (checked before any connection attempt).
      DistributedInitError: if the processes did not connect within `timeout_s`.
    """
    timeout_s = check_positive_int(timeout_s, "timeout_s")
    if auto:
        if any(v is not None for v in (coordinator, num_processes, process_id)):
            raise ValueError(
                "`auto` cluster detection takes no `coordinator`, `num_processes` or `process_id`."
            )
        kwargs = {}
    else:
        coordinator, num_processes, process_id = check_process_args(
            coordinator, num_processes, process_id
        )
        kwargs = {
            "coordinator_address": coordinator,
            "num_processes": num_processes,
            "process_id": process_id,
        }
    if coordinator is not None and process_id != 0:
        # JAX's client aborts the whole process (a C++ check failure, not an exception)
        # when the coordinator never answers; probing the port first turns the common
        # case, a wrong address or process 0 not started, into an error we can report.
        _wait_for_port(coordinator, timeout_s)
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=timeout_s)
    except Exception as err:  # jax raises RuntimeError/XlaRuntimeError/ValueError here
        where = f"coordinator {coordinator}" if coordinator else "the detected cluster"
        raise DistributedInitError(
            f"could not join the multi-host run at {where} within {timeout_s} s "
            f"(is process 0 running and the port reachable?): {err}"
        ) from err


def _wait_for_port(address: str, timeout_s: float) -> None:
    host, port = address.rsplit(":", 1)
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise DistributedInitError(
                    f"the coordinator {address} did not accept a connection within "
                    f"{timeout_s} s ({err}); start process 0 first, or check `coordinator`."
                ) from None
            time.sleep(0.2)


def is_main_process() -> bool:
    """True on the process that writes metrics, pictures and reports (process 0)."""
    return jax.process_index() == 0


def data_mesh(devices: int | str | None = 1) -> Mesh | None:
    """The data mesh for `--devices`: N devices (or "all") of every process, or None.

    Args:
      devices: devices per process: a positive int, "all" for every local device, or
        None / 1 for a plain one-device run (which in a multi-host run still means one
        device on each process).

    Returns:
      None for one device in a one-process run; otherwise a one-axis `"data"` mesh over
      the first `devices` local devices of each process, ordered by process, so that
      process `p` holds the `p`-th block of every sharded batch.

    Raises:
      ValueError: naming `devices` if it is not a positive int or "all", or larger than
        the number of local devices.
    """
    local = jax.local_device_count()
    if devices is None:
        devices = 1
    if devices == "all":
        devices = local
    if isinstance(devices, str) or isinstance(devices, bool) or not isinstance(devices, int):
        raise ValueError(f"`devices` must be a positive integer or 'all', got {devices!r}.")
    if devices < 1:
        raise ValueError(f"`devices` must be >= 1, got {devices}.")
    if devices > local:
        platform = jax.local_devices()[0].platform
        raise ValueError(
            f"`devices` is {devices} but this process has only {local} {platform} device(s)"
            + (
                "; on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count=N to simulate N."
                if platform == "cpu"
                else "."
            )
        )
    if devices == 1 and jax.process_count() == 1:
        return None
    by_process: dict[int, list] = {}
    for d in jax.devices():
        by_process.setdefault(d.process_index, []).append(d)
    chosen = [
        d for p in sorted(by_process) for d in sorted(by_process[p], key=lambda d: d.id)[:devices]
    ]
    return Mesh(np.asarray(chosen), (DATA_AXIS,), axis_types=(AxisType.Auto,))
