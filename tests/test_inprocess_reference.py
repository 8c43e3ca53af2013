"""The in-process reference of `wm-vla demo`'s ROS/in-process ratio decides at the stack's cadence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wm_vla.cpus import usable_cpus

from wm_vla.eval.ros_demo import DemoConfig, decision_period_s, inprocess_decision_ms
from wm_vla.training.pipeline import default_checkpoints


def test_decision_period_is_the_policys_execution_horizon_at_the_policy_rate() -> None:
    policy, _ = default_checkpoints()
    assert decision_period_s(str(policy), 10.0) == 0.8  # the tiny preset runs 8 of its actions per decision
    assert decision_period_s(str(policy), 20.0) == 0.4


def test_paced_reference_takes_one_decision_per_period() -> None:
    cfg = DemoConfig(k=1)
    t0 = time.perf_counter()
    paced = inprocess_decision_ms(cfg, n=2)
    paced_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    back_to_back = inprocess_decision_ms(cfg, n=2, paced=False)
    b2b_s = time.perf_counter() - t0
    assert len(paced) == len(back_to_back) == 2 and all(s["total"] > 0 for s in paced + back_to_back)
    assert paced_s >= 2 * 0.8  # two timed decisions, each a period after the one before
    assert paced_s - b2b_s > 1.0


BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_neighbours.py"


def _session_members(sid: int) -> list[int]:
    """Live processes of session `sid` (the benchmark runs in its own session, so its neighbours are in it)."""
    members = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # ended meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(pid))
    return members


def _bench(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(BENCH), *args], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


needs_two_cpus = pytest.mark.skipif(usable_cpus() < 2, reason="the benchmark needs 2 CPUs; this machine gives one")


@needs_two_cpus
def test_cpu_neighbours_benchmark_times_every_placement_and_stops_its_neighbours(tmp_path: Path) -> None:
    proc = _bench("--rounds", "1", "--per-round", "1", "--out", str(tmp_path / "n"))
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    report = json.loads((tmp_path / "n.json").read_text())
    assert set(report["times_ms"]) == {"alone", "busy_other_cpu", "wake_1000hz_other_cpu", "wake_200hz_same_cpu",
                                       "wake_1000hz_same_cpu"}
    assert report["ratio_to_alone"]["alone"] == 1.0
    assert all(len(v) == 1 and v[0] > 0 for v in report["times_ms"].values())
    assert (tmp_path / "n.png").stat().st_size > 5_000
    assert not _session_members(proc.pid), "a neighbour process outlived the benchmark"


@needs_two_cpus
def test_cpu_neighbours_die_with_a_killed_benchmark(tmp_path: Path) -> None:
    """A benchmark killed mid-run (e.g. by a test timeout) must not leave a busy loop behind on a CI machine."""
    proc = _bench("--rounds", "3", "--per-round", "40", "--out", str(tmp_path / "n"))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and len(_session_members(proc.pid)) < 2:
            time.sleep(0.2)
        assert len(_session_members(proc.pid)) >= 2, "no neighbour started"
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _session_members(proc.pid):
            time.sleep(0.1)
        assert not _session_members(proc.pid), "a neighbour outlived the killed benchmark"
    finally:
        if _session_members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
