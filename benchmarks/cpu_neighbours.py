"""What another process costs the in-process K=16 decision, by where it runs and how often it wakes.

The decision (encode, K samples, world model, GPC-RANK) is pinned to the last usable CPU, as `inference_cpus: auto`
pins vla_node. Beside it, in turn (modes interleaved in random order per round, one process): nothing; a busy loop
on another CPU; a process waking N times a second (a few microseconds of work each time) on another CPU; the same on
the decision's own CPU. The ratios show why the bringup plan keeps the other nodes off the policy's CPU
(docs/ros_stack.md, "Where a decision's time goes").

    python benchmarks/cpu_neighbours.py --rounds 3 --per-round 8 --out outputs/bench/cpu_neighbours

Writes OUT.json (per-mode times, p50 ratios to "alone") and OUT.png.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Every neighbour (argv: wake period s, CPU, the benchmark's pid) first arranges to die with the benchmark
# (PR_SET_PDEATHSIG), even one killed by a test's timeout, then moves itself onto its CPU.
PRELUDE = ("import ctypes, os, signal, sys\n"
           "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
           "if os.getppid() != int(sys.argv[3]):\n    sys.exit(0)\n"
           "os.sched_setaffinity(0, {int(sys.argv[2])})\n")
WAKER = PRELUDE + ("import time\nimport numpy as np\nbuf = np.random.rand(65536)\nperiod = float(sys.argv[1])\n"
                   "while True:\n    time.sleep(period)\n    buf.sum()\n")
BUSY = PRELUDE + "while True:\n    pass\n"


def modes(rate_hz: float, low_rate_hz: float) -> dict[str, tuple[str, str, float] | None]:
    """mode -> (which CPU: "other" | "same", code, wake period s) or None (nothing beside the decision)."""
    return {"alone": None, "busy_other_cpu": ("other", BUSY, 0.0),
            f"wake_{rate_hz:g}hz_other_cpu": ("other", WAKER, 1 / rate_hz),
            f"wake_{low_rate_hz:g}hz_same_cpu": ("same", WAKER, 1 / low_rate_hz),
            f"wake_{rate_hz:g}hz_same_cpu": ("same", WAKER, 1 / rate_hz)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-round", type=int, default=8, help="decisions per mode and round")
    ap.add_argument("--rate", type=float, default=1000.0, help="wake-ups per second of the neighbour")
    ap.add_argument("--low-rate", type=float, default=200.0, help="a second, lower rate on the decision's CPU")
    ap.add_argument("--out", default="outputs/bench/cpu_neighbours")
    args = ap.parse_args(argv)

    from wm_vla.cpus import allowed_cpus, usable_cpus

    cpus = allowed_cpus()[:usable_cpus()]
    if len(cpus) < 2:
        raise SystemExit(f"needs at least 2 usable CPUs, this process has {len(cpus)}")
    mine, other = cpus[-1], cpus[0]
    os.sched_setaffinity(0, {mine})
    if os.sched_getscheduler(0) != os.SCHED_OTHER:  # e.g. started from a thread a library left real-time
        print("[cpu_neighbours] this thread was not normally scheduled; measuring with SCHED_OTHER", flush=True)
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

    from tqdm import tqdm

    from wm_vla.eval.plots import write_json_and_boxes
    from wm_vla.eval.ros_demo import DemoConfig, fixed_decision

    ref = fixed_decision(DemoConfig(backend=args.backend, k=args.k))
    table = modes(args.rate, args.low_rate)
    times: dict[str, list[float]] = {m: [] for m in table}
    rng, n = random.Random(0), 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    for _ in tqdm(range(args.rounds), desc="rounds", unit="round"):
        for mode in rng.sample(list(table), len(table)):
            neighbour = None
            if table[mode] is not None:
                where, code, period = table[mode]  # type: ignore[misc]
                cpu = mine if where == "same" else other
                neighbour = subprocess.Popen([sys.executable, "-c", code, str(period), str(cpu), str(os.getpid())],
                                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                time.sleep(0.5)  # started and on its CPU
            try:
                for _ in range(args.per_round):
                    times[mode].append(ref.decide(n))
                    n += 1
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
    ref.close()

    p50 = {m: float(np.percentile(v, 50)) for m, v in times.items()}
    ratios = {m: p50[m] / p50["alone"] for m in table}
    for m in table:
        print(f"{m:>24}: p50 {p50[m]:7.1f} ms  ratio {ratios[m]:.2f}  ({len(times[m])} decisions)")
    report = {"backend": args.backend, "k": args.k, "decision_cpu": mine, "other_cpu": other, "p50_ms": p50,
              "ratio_to_alone": ratios, "times_ms": times}
    title = f"K={args.k} {args.backend} decision on CPU {mine}, with a neighbour process"
    json_path, png_path = write_json_and_boxes(report, times, title, Path(args.out), figsize=(8, 3.8))
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
