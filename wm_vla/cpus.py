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
