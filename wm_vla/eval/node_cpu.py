"""How many cores each node of a running stack keeps busy: where a small machine's CPU goes during a demo.

A background thread reads every node process's CPU time once per `period_s`; per interval, a node's busy cores are
its CPU seconds over the interval's wall seconds. The summary takes the median over intervals, so the few seconds
of model loading at start-up do not count as steady state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

import numpy as np

TOTAL = "all nodes"


class NodeCpuSampler:
    """Sample `read()` (node name -> CPU seconds so far) every `period_s` while the `with` block runs."""

    def __init__(self, read: Callable[[], dict[str, float]], period_s: float = 1.0) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.read, self.period_s = read, period_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-cpu-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), self.read()))
            if self._stop.wait(self.period_s):
                self.samples.append((time.monotonic(), self.read()))
                return

    def __enter__(self) -> NodeCpuSampler:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def cores_busy(self) -> dict[str, float]:
        """Per node and in total (`TOTAL`): median busy cores over the sampled intervals; {} with no interval."""
        return median_cores_busy(self.samples)


def median_cores_busy(samples: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
    """Median over consecutive samples of (CPU seconds used) / (wall seconds), per name and summed (`TOTAL`).
    A name missing from either end of an interval (not started yet, or exited) is left out of that interval."""
    per: dict[str, list[float]] = {}
    totals: list[float] = []
    for (t0, a), (t1, b) in zip(samples, samples[1:], strict=False):
        wall = t1 - t0
        if wall <= 0:
            continue
        busy = {n: max(0.0, b[n] - a[n]) / wall for n in b if n in a}
        for n, v in busy.items():
            per.setdefault(n, []).append(v)
        if busy:
            totals.append(sum(busy.values()))
    out = {n: round(float(np.median(v)), 3) for n, v in sorted(per.items())}
    if totals:
        out[TOTAL] = round(float(np.median(totals)), 3)
    return out
