"""`wm-vla demo` end to end (two stack starts over ROS 2, one episode each): the report has the promised keys."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from wm_vla.cli import main

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.e2e]


def test_demo_writes_the_report(ros_domain: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--episodes", "1", "--rate-scale", "0.25", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("episodes", "success_rate_ranked", "success_rate_single", "latency_ms_p50", "latency_ms_p99"):
        assert key in report
    assert report["episodes"] == 1 and report["success_rate_ranked"] in (0.0, 1.0)
    # the sim's autostarted episode only warmed each stack up: the counted one is the first held-out seed
    for row in report["configs"]:
        assert [(e["episode"], e["seed"]) for e in row["per_episode"]] == [(1, report["seeds"][0])] == [(1, 1_000_000)]
    # on the sim clock the latency is in whole sim steps (0 = within the step the frame was taken)
    assert math.isfinite(report["latency_ms_p50"]) and report["latency_ms_p99"] >= report["latency_ms_p50"] >= 0
    assert (tmp_path / "report.png").stat().st_size > 5_000
    parts = report["decision_breakdown_ms_p50"]  # each node's own stage times, collected over ROS
    assert parts["ros"]["vla_inference"] > 0 and parts["ros"]["ranking"] > 0 and parts["ros"]["decision"] >= 0  # sim steps
    assert parts["inprocess"]["inference"] > 0 and parts["inprocess"]["ranking"] > 0
    # sim-clock decision times have no wall-clock in-process counterpart: no ratio, no interval
    assert math.isnan(report["decision_ratio_ros_over_inprocess"])
    assert all(math.isnan(x) for x in report["decision_ratio_ros_over_inprocess_ci95"])
    for row in report["configs"]:  # where the CPU went while the episodes ran, per node process
        cores = row["node_cores_busy"]
        assert {"sim_robot", "perception_node", "vla_node", "world_model_node", "all nodes"} <= set(cores)
        assert cores["vla_node"] > 0 and cores["all nodes"] >= max(v for n, v in cores.items() if n != "all nodes")
    out = capsys.readouterr().out
    assert "camera stamp -> command" in out and "cores busy per node" in out


def test_inprocess_reference_beside_the_running_stack(ros_domain: int, tmp_path: Path) -> None:
    from wm_vla.eval.ros_demo import DemoConfig, inprocess_beside_stack

    stages = inprocess_beside_stack(DemoConfig(k=1, episodes=1, out=str(tmp_path)), tmp_path / "logs", n=2,
                                    settle_s=5.0)
    assert len(stages) == 2 and all(s["total"] > 0 for s in stages)
    assert (tmp_path / "logs" / "sim_robot.log").is_file()  # the stack did run beside it
