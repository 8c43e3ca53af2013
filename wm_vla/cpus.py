"""How many CPUs this process may really use, and the thread-pool settings every node process starts with.

A container started with `--cpus=2` on a 64-core host sees 64 CPUs (`os.cpu_count()`, often the affinity mask too)
but gets 2 cores' worth of time per CFS period (cgroup `cpu.max`). Thread pools sized to 64 (OpenBLAS under numpy,
OpenMP, Mesa's llvmpipe renderer) burn the quota in bursts, then the whole cgroup is throttled until the next period:
a 50 Hz control loop misses its deadlines. `usable_cpus` takes the quota into account, and `node_environment` gives
each node process one BLAS/OpenMP thread (the nodes run small matrices; their torch/onnxruntime intra-op threads are
the `threads` parameter) and llvmpipe as many threads as the quota allows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def cgroup_dir() -> Path | None:
    """This process's cgroup v2 directory (None on cgroup v1, outside Linux, or when it is not readable)."""
    try:
        line = next(ln for ln in Path("/proc/self/cgroup").read_text().splitlines() if ln.startswith("0::"))
    except (OSError, StopIteration):
        return None
    path = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
    return path if (path / "cpu.stat").is_file() else None


def cgroup_cpu_quota(cg: Path | None = None) -> float | None:
    """The CPU quota of cgroup `cg` (default: this process's) in cores (`cpu.max` "200000 100000" -> 2.0); None when
    unlimited or unknown."""
    cg = cg if cg is not None else cgroup_dir()
    try:
        fields = (cg / "cpu.max").read_text().split() if cg is not None else []
    except OSError:
        return None
    if len(fields) != 2 or not fields[0].isdigit() or not fields[1].isdigit() or int(fields[1]) == 0:
        return None  # "max 100000": no quota
    quota, period = fields
    return int(quota) / int(period)


def usable_cpus(cg: Path | None = None) -> int:
    """CPUs this process may run on (affinity mask), capped by the quota of cgroup `cg` (default: this process's),
    rounded up; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cg)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def node_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Thread-pool variables for a node process, only those not already set in `base` (default: os.environ)."""
    base = dict(os.environ) if base is None else base
    defaults = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "LP_NUM_THREADS": str(usable_cpus())}
    return {k: v for k, v in defaults.items() if k not in base}


class CpuAffinityError(ValueError):
    """A CPU list that is malformed or names CPUs this process may not run on."""


def allowed_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on (its affinity mask), sorted."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return tuple(range(os.cpu_count() or 1))


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """A taskset-style CPU list ("1", "0,2", "0-3"; "" -> ()) checked against the CPUs this process may use."""
    cpus: set[int] = set()
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if sep else lo)
        except ValueError:
            raise CpuAffinityError(f"CPU list {text!r}: {part!r} is not a CPU number or range (e.g. 1, 0-3)") from None
        if first < 0 or last < first:
            raise CpuAffinityError(f"CPU list {text!r}: bad range {part!r}")
        cpus.update(range(first, last + 1))
    allowed = allowed_cpus()
    outside = sorted(cpus - set(allowed))
    if outside:
        raise CpuAffinityError(f"CPU list {text!r}: CPUs {outside} are not available to this process "
                               f"(it may use {format_cpu_list(allowed)})")
    return tuple(sorted(cpus))


def format_cpu_list(cpus: tuple[int, ...] | list[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def pin_process(cpus: tuple[int, ...]) -> int:
    """Restrict every thread of this process (DDS, executor and worker threads alike) to `cpus`; threads and child
    processes started later inherit it. Returns the number of threads pinned."""
    tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
    pinned = 0
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
            pinned += 1
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    return pinned


def inference_split(spec: str) -> tuple[str, str] | None:
    """(inference CPUs, every other node's CPUs) as CPU lists for the bringup plan, or None (no pinning).

    "auto": on a machine with at least 2 usable CPUs the last one runs the policy (vla_node and its sampler process)
    alone, the others run everything else: other processes' thread wake-ups then never preempt the sampling (on the
    2-vCPU VM they slowed a K=16 decision by 10-20 %, docs/ros_stack.md). "" or "off": no pinning. A CPU list: those
    CPUs for inference, the rest for the other nodes."""
    spec = (spec or "").strip().lower()
    if spec in ("", "off", "none"):
        return None
    allowed = allowed_cpus()
    if spec == "auto":
        usable = allowed[:usable_cpus()]  # usable_cpus() <= len(allowed): the cgroup quota may cap it
        if len(usable) < 2:
            return None
        inference = (usable[-1],)
    else:
        inference = parse_cpu_list(spec)
    others = tuple(c for c in allowed if c not in inference)
    if not inference or not others:
        raise CpuAffinityError(f"inference CPUs {spec!r} must leave at least one of the CPUs "
                               f"{format_cpu_list(allowed)} to the other nodes")
    return format_cpu_list(inference), format_cpu_list(others)


@dataclass
class SchedulingRestored:
    """What `thread_scheduling_kept` found after its block: the policy the block left (None: unchanged)."""

    left_policy: int | None = None


@contextmanager
def thread_scheduling_kept() -> Iterator[SchedulingRestored]:
    """Run the block, then give the calling thread back the scheduling policy and priority it had before.

    Why: SVT-AV1 (lerobot's AV1 video encoder; v3.0 in PyAV's wheels), run as root, leaves the thread that encodes at
    SCHED_FIFO priority 99. A recorder or collector thread would then outrank every normal thread on its CPU,
    the control loop's included, and every process it starts afterwards would inherit the real-time policy. Lowering
    a thread's policy needs no privilege. Outside Linux this does nothing."""
    found = SchedulingRestored()
    if not hasattr(os, "sched_getscheduler"):
        yield found
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)  # pid 0: the calling thread (Linux)
    try:
        yield found
    finally:
        now = os.sched_getscheduler(0)
        if now != policy or os.sched_getparam(0).sched_priority != param.sched_priority:
            found.left_policy = now
            os.sched_setscheduler(0, policy, param)
