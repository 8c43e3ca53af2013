"""The in-process reference of `wm-vla demo`'s ROS/in-process ratio decides at the stack's cadence."""

from __future__ import annotations

import time

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


def test_cpu_neighbours_benchmark_times_every_placement_and_stops_its_neighbours(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import importlib.util
    import json
    import os
    from pathlib import Path

    import pytest

    from wm_vla.cpus import usable_cpus

    if usable_cpus() < 2:
        pytest.skip("the benchmark needs 2 CPUs; this machine gives the process one")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_neighbours.py"
    spec = importlib.util.spec_from_file_location("cpu_neighbours", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = os.sched_getaffinity(0)
    try:
        assert bench.main(["--rounds", "1", "--per-round", "1", "--out", str(tmp_path / "n")]) == 0
    finally:
        os.sched_setaffinity(0, before)  # the benchmark pins its own process
    report = json.loads((tmp_path / "n.json").read_text())
    assert set(report["times_ms"]) == set(bench.modes(1000.0, 200.0)) and report["ratio_to_alone"]["alone"] == 1.0
    assert all(len(v) == 1 and v[0] > 0 for v in report["times_ms"].values())
    assert (tmp_path / "n.png").stat().st_size > 5_000

    def parent_of(pid: str) -> str:
        try:
            return Path(f"/proc/{pid}/status").read_text(errors="ignore").split("PPid:")[1].split()[0]
        except (OSError, IndexError):  # ended meanwhile
            return ""

    children = [p for p in os.listdir("/proc") if p.isdigit() and parent_of(p) == str(os.getpid())]
    assert not children, "a neighbour process outlived the benchmark"
