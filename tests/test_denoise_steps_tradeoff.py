"""benchmarks/denoise_steps_tradeoff.py: the table, JSON and plot it builds from the eval and demo results in OUT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from script_helpers import load_script


def _module() -> Any:
    return load_script("benchmarks/denoise_steps_tradeoff.py")


def _results(out: Path, steps: int, p99_ranked: float, ratio: float | None) -> None:
    """What `wm-vla eval sim` and `wm-vla demo` leave in OUT for one steps value (the benchmark then runs nothing)."""
    configs = [{"name": "single", "k": 1, "episodes": 100, "successes": 44, "success_rate": 0.44, "ci95": [0.35, 0.54]},
               {"name": "rank", "k": 16, "episodes": 100, "successes": 55, "success_rate": 0.55, "ci95": [0.45, 0.64]}]
    (out / f"eval_steps{steps}.json").write_text(json.dumps({"configs": configs}))
    ros = out / f"ros_steps{steps}"
    ros.mkdir()
    report: dict[str, Any] = {"configs": [
        {"name": "ranked", "episodes": 10, "successes": 6, "latency_ms_p50": p99_ranked - 5, "latency_ms_p99": p99_ranked},
        {"name": "single", "episodes": 10, "successes": 4, "latency_ms_p50": 12.0, "latency_ms_p99": 15.0}]}
    if ratio is not None:  # a report from before the demo measured the decision ratio has none
        report.update(decision_ms_ros_p50=40.0 * ratio, decision_ms_inprocess_p50=40.0,
                      decision_ratio_ros_over_inprocess=ratio)
    (ros / "report.json").write_text(json.dumps(report))


def test_the_table_says_where_both_latency_targets_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _module()
    _results(tmp_path, 3, p99_ranked=40.0, ratio=1.35)   # fast enough, too much ROS overhead
    _results(tmp_path, 7, p99_ranked=55.0, ratio=1.12)   # both
    _results(tmp_path, 9, p99_ranked=66.0, ratio=1.10)   # over the p99 budget
    _results(tmp_path, 10, p99_ranked=120.0, ratio=None)
    assert bench.main(["--steps", "3,7,9,10", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    verdicts = {int(line.split()[0]): line.split()[-1] for line in lines if line.split() and line.split()[0].isdigit()}
    assert verdicts == {3: "no", 7: "yes", 9: "no", 10: "no"}
    saved = json.loads((tmp_path / "tradeoff.json").read_text())
    assert (saved["budget_ms"], saved["ratio_target"]) == (60.0, 1.15)
    ranked = {r["steps"]: r["rank"] for r in saved["rows"]}
    assert ranked[7]["ros_decision_ratio"] == 1.12 and ranked[7]["inprocess_decision_ms_p50"] == 40.0
    assert ranked[10]["ros_decision_ratio"] is None and ranked[10]["successes"] == 55
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"


def test_a_stricter_ratio_target_changes_the_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _module()
    _results(tmp_path, 7, p99_ranked=55.0, ratio=1.12)
    assert bench.main(["--steps", "7", "--out", str(tmp_path), "--ratio-target", "1.10"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "no"


@pytest.mark.parametrize("steps", ["0,3", "three", ","])
def test_bad_steps_are_refused_before_anything_runs(tmp_path: Path, steps: str) -> None:
    with pytest.raises(SystemExit):
        _module().main(["--steps", steps, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
