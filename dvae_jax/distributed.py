"""Devices and hosts: JAX's distributed runtime, the device mesh, and where arrays live.

Data parallelism with ``jax.sharding``: a :class:`Placement` holds a ``Mesh`` whose ``data`` axis
splits every batch by rows; parameters, optimizer state and the step counters are replicated on
every device (the models are small: at most a few million parameters, so sharding them FSDP-style
would add an all-gather per layer per step and save a few MB; see docs/distributed.md). The jitted
steps take explicit ``in_shardings`` / ``out_shardings``; XLA inserts the all-reduce of the
gradients, so a sharded step is the single-device step on the same global batch, up to the order
of floating-point sums.

Several hosts: :func:`initialize` calls ``jax.distributed.initialize`` from the environment
(``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, or a SLURM allocation of
more than one task). Every process runs the same program; :meth:`Placement.rows` says which rows of
each global batch a process reads and feeds (:meth:`Placement.put_batch`), and only process 0
(:attr:`Placement.writer`) writes logs, plots and reports. Orbax writes checkpoints from every
process (each its own shards; replicated arrays once).

A population's mesh has a ``members`` axis too: member k's state lives on the ``members`` slice
holding k, and its batch rows are split on ``data`` (population.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import socket
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dvae_jax import errors

AXES = ("members", "data")
ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
_ITEM = re.compile(r"^\s*([a-z_]+)\s*=\s*(\d+|auto)\s*$")


def initialize() -> bool:
    """Joins the processes of a multi-host run, once, before any computation; a no-op for a single
    process. Reads the coordinator's address, the number of processes and this process's id from
    ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, or lets JAX detect a
    SLURM job with more than one task. Returns whether the runtime was initialized here.

    Raises:
        errors.ConfigError: the variables are incomplete or not numbers.
    """
    if jax.distributed.is_initialized():
        return False
    given = {k: os.environ.get(k) for k in ENV}
    if any(given.values()):
        missing = [k for k, v in given.items() if not v]
        if missing:
            raise errors.ConfigError(
                f"multi-host run: {', '.join(missing)} not set (set all of {', '.join(ENV)}, or none)")
        try:
            n, pid = int(given["JAX_NUM_PROCESSES"]), int(given["JAX_PROCESS_ID"])
        except ValueError:
            raise errors.ConfigError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got "
                                     f"{given['JAX_NUM_PROCESSES']!r} and {given['JAX_PROCESS_ID']!r}") from None
        if not 0 <= pid < n:
            raise errors.ConfigError(f"JAX_PROCESS_ID={pid} must be in [0, JAX_NUM_PROCESSES={n})")
        if n == 1:
            return False
        _check_coordinator(given["JAX_COORDINATOR_ADDRESS"], pid)
        _join(f"{given['JAX_COORDINATOR_ADDRESS']} as process {pid} of {n}", given["JAX_COORDINATOR_ADDRESS"],
              num_processes=n, process_id=pid)
        return True
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and os.environ.get("SLURM_JOB_ID"):
        _join(f"the SLURM job {os.environ['SLURM_JOB_ID']}")  # JAX reads the SLURM variables itself
        return True
    return False


def _check_coordinator(address: str, pid: int) -> None:
    """What JAX would only report by aborting the process (a C++ fatal error, after its timeout):
    process 0 must be able to bind the coordinator's port; the others must reach it within
    ``DVAE_JAX_COORDINATOR_TIMEOUT`` seconds (default 300, JAX's own initialization timeout).

    Raises:
        errors.ConfigError: a malformed address. errors.RunError: a busy or unreachable port.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.ConfigError(f"JAX_COORDINATOR_ADDRESS={address!r}: expected HOST:PORT, e.g. node001:12345")
    host = host.strip("[]")
    if pid == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind(("", int(port)))
            except OSError as e:
                raise errors.RunError(f"JAX_COORDINATOR_ADDRESS={address}: process 0 cannot listen on port "
                                      f"{port} ({e.strerror}): choose a free port") from None
        return
    deadline = time.monotonic() + float(os.environ.get("DVAE_JAX_COORDINATOR_TIMEOUT", "300"))
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise errors.RunError(
                    f"JAX_COORDINATOR_ADDRESS={address}: process {pid} cannot reach the coordinator "
                    f"({e.strerror or e}): start process 0 (JAX_PROCESS_ID=0) on that host, or fix the "
                    "address") from None
            time.sleep(0.5)


def _join(where: str, *args, **kwargs) -> None:
    """jax.distributed.initialize; a failure (no coordinator within JAX's timeout, a refused
    port) is one RunError line."""
    try:
        jax.distributed.initialize(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - XlaRuntimeError, RuntimeError, ValueError alike
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise errors.RunError(f"could not join the multi-host run at {where}: {reason}; check that every "
                              "process is started, that process 0's host and port are reachable, and "
                              "the JAX_* / SLURM variables") from None


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def parse_mesh(text: str, allowed: tuple[str, ...] = ("data",)) -> dict[str, int | None]:
    """``'data=4'``, ``'data=auto'``, ``'members=2,data=2'`` -> {axis: size, None for auto}.

    Raises:
        errors.ConfigError: an unknown axis, a bad size, or more than one ``auto``.
    """
    axes: dict[str, int | None] = {}
    for item in str(text).split(","):
        m = _ITEM.match(item)
        if not m or m.group(1) not in allowed or m.group(1) in axes:
            raise errors.ConfigError(
                f"--mesh {text!r}: expected {' or '.join(f'{a}=N|auto' for a in allowed)} "
                f"(comma-separated, each axis once), e.g. --mesh {allowed[-1]}=auto")
        size = None if m.group(2) == "auto" else int(m.group(2))
        if size == 0:
            raise errors.ConfigError(f"--mesh {text!r}: {m.group(1)}=0: an axis needs at least one device")
        axes[m.group(1)] = size
    if sum(v is None for v in axes.values()) > 1:
        raise errors.ConfigError(f"--mesh {text!r}: at most one axis may be 'auto'")
    return axes


def build_mesh(axes: dict[str, int | None]) -> Mesh:
    """A mesh with the axes in :data:`AXES` order over the first devices (all of them with several
    processes, each process's devices contiguous on the ``data`` axis); ``auto`` takes what the
    others leave.

    Raises:
        errors.ConfigError: more devices asked for than there are, or (several processes) fewer.
    """
    n = jax.device_count()
    fixed = math.prod(v for v in axes.values() if v is not None)
    sizes = {a: (v if v is not None else max(n // fixed, 1)) for a, v in axes.items()}
    total = math.prod(sizes.values())
    if total > n or n % fixed and None in axes.values():
        raise errors.ConfigError(
            f"--mesh {_text(axes)}: {total} devices asked for, {n} available "
            f"({jax.local_device_count()} on this process, {jax.process_count()} process(es))")
    if jax.process_count() > 1 and total != n:
        raise errors.ConfigError(f"--mesh {_text(axes)}: a multi-host mesh must use every device "
                                 f"({n}), not {total}")
    if jax.process_count() > 1 and "members" in axes:
        raise errors.ConfigError(f"--mesh {_text(axes)}: a population's members axis runs in one "
                                 "process (its devices: one multi-GPU node); use data=N across hosts")
    names = tuple(a for a in AXES if a in sizes)
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))[:total]
    shape = tuple(sizes[a] for a in names)
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    return Mesh(np.array(devices, dtype=object).reshape(shape), names, axis_types=auto)


def _text(axes: dict[str, int | None]) -> str:
    return ",".join(f"{a}={'auto' if v is None else v}" for a, v in axes.items())


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the fit loop's arrays live. ``mesh`` None: the default device, arrays as they come
    (the single-device program, unchanged)."""

    mesh: Mesh | None = None

    @classmethod
    def from_text(cls, text: str | None, allowed: tuple[str, ...] = ("data",)) -> Placement:
        return cls(None if not text else build_mesh(parse_mesh(text, allowed)))

    @property
    def data(self) -> int:
        """Devices on the ``data`` axis (1 without a mesh)."""
        return 1 if self.mesh is None else int(self.mesh.shape.get("data", 1))

    @property
    def members(self) -> int:
        return 1 if self.mesh is None else int(self.mesh.shape.get("members", 1))

    @property
    def writer(self) -> bool:
        """Whether this process writes logs, plots and reports (process 0)."""
        return jax.process_index() == 0

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else int(self.mesh.devices.size)

    def describe(self) -> str:
        if self.mesh is None:
            return f"one device ({jax.devices()[0].platform})"
        axes = " x ".join(f"{a} {s}" for a, s in self.mesh.shape.items())
        return (f"mesh {axes} over {self.devices} {jax.devices()[0].platform} device(s), "
                f"{jax.process_count()} process(es)")

    def sharding(self, *spec) -> NamedSharding | None:
        return None if self.mesh is None else NamedSharding(self.mesh, P(*spec))

    def check_batch(self, batch_size: int, what: str = "train.batch_size") -> None:
        """Raises ConfigError unless the data axis divides the global batch."""
        if batch_size % self.data:
            raise errors.ConfigError(
                f"{what}={batch_size} does not split over the mesh's data axis ({self.data} devices): "
                f"use a multiple of {self.data}, or a --mesh data=N whose N divides {batch_size}")

    def rows(self, batch_size: int) -> tuple[int, int]:
        """The rows [lo, hi) of a global batch this process reads and feeds: its devices' share
        of the ``data`` axis (every row with one process)."""
        if self.mesh is None or jax.process_count() == 1:
            return 0, batch_size
        index = self.sharding("data").addressable_devices_indices_map((batch_size,)).values()
        spans = sorted({(i[0].start or 0, i[0].stop or batch_size) for i in index})
        if any(a[1] != b[0] for a, b in itertools.pairwise(spans)):
            raise errors.ConfigError("this process's devices are not contiguous on the mesh's data axis")
        return spans[0][0], spans[-1][1]

    def put_batch(self, local: dict, batch_axis: int = 0) -> dict:
        """A batch of this process's rows (:meth:`rows`) as global arrays split on ``data`` along
        ``batch_axis``, and on ``members`` along axis 0 when the mesh has that axis and
        ``batch_axis`` is 1 (a population's (K, b, ...) batch)."""
        if self.mesh is None:
            return local
        out = {}
        for k, v in local.items():
            v = np.asarray(v)
            spec: list[str | None] = [None] * v.ndim
            spec[batch_axis] = "data" if "data" in self.mesh.shape else None
            if batch_axis == 1 and "members" in self.mesh.shape:
                spec[0] = "members"
            shape = list(v.shape)
            shape[batch_axis] *= jax.process_count()  # each process holds an equal share of the rows
            out[k] = jax.make_array_from_process_local_data(self.sharding(*spec), v, tuple(shape))
        return out

    def replicate(self, tree: Any) -> Any:
        """``tree`` on every device of the mesh (each process gives the same values)."""
        if self.mesh is None or tree is None:
            return tree
        return jax.device_put(tree, self.sharding())

    def row_shardings(self, tree: Any, batch_size: int) -> Any:
        """Shardings for a per-row state (the streams carry): leaves whose first axis is the batch
        split on ``data``, others replicated."""
        return jax.tree_util.tree_map(
            lambda a: self.sharding("data") if np.ndim(a) and np.shape(a)[0] == batch_size else self.sharding(),
            tree)
