"""Cores busy per node: the interval arithmetic, and a real busy process next to a sleeping one."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from wm_vla.eval.node_cpu import TOTAL, NodeCpuSampler, median_cores_busy


def test_median_cores_busy_per_interval() -> None:
    samples = [(0.0, {"a": 0.0}), (1.0, {"a": 0.5, "b": 0.0}), (2.0, {"a": 1.5, "b": 0.25}),
               (4.0, {"a": 2.0, "b": 0.75}), (4.0, {"a": 9.0, "b": 9.0})]  # a zero-length interval is skipped
    busy = median_cores_busy(samples)
    assert busy["a"] == pytest.approx(0.5)   # intervals: 0.5, 1.0, 0.25
    assert busy["b"] == pytest.approx(0.25)  # b only where it is at both ends: 0.25, 0.25
    assert busy[TOTAL] == pytest.approx(0.5)  # sums: 0.5, 1.25, 0.5
    assert median_cores_busy([(0.0, {"a": 1.0})]) == {}
    # a restarted process's counter starts again from zero: never negative
    assert median_cores_busy([(0.0, {"a": 5.0}), (1.0, {"a": 0.1})])["a"] == 0.0


def test_sampler_sees_a_busy_process_and_an_idle_one() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    procs = {"busy": psutil.Process(busy.pid), "idle": psutil.Process(idle.pid)}

    def read() -> dict[str, float]:
        return {n: p.cpu_times().user + p.cpu_times().system for n, p in procs.items()}

    try:
        time.sleep(0.5)  # past interpreter start-up
        with NodeCpuSampler(read, period_s=0.5) as sampler:
            time.sleep(3.0)
        cores = sampler.cores_busy()
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
    assert len(sampler.samples) >= 5
    assert 0.3 < cores["busy"] <= 1.1   # one thread spinning: up to one core (less when the machine is shared)
    assert cores["idle"] < 0.05
    with pytest.raises(ValueError, match="period_s"):
        NodeCpuSampler(read, period_s=0)
