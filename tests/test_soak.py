"""Soak: the report arithmetic on known samples, and the 3-minute CI soak of the real sim stack (`e2e`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wm_vla.eval.soak import SoakSample, plot_soak, summarize_soak

ROOT = Path(__file__).resolve().parents[1]


def _sample(t: float, rss: float, misses: float, published: float, dropped: float, gap_ms: float = 21.0) -> SoakSample:
    return SoakSample(t, {"vla_node": rss, "world_model_node": 200.0},
                      {"world_model_node": {"deadline_misses": misses, "control_rate_hz": 50.0,
                                            "control_ticks": 49.0 * t, "control_gap_ms_max": gap_ms},
                       "perception_node": {"published": published, "dropped_stale_frame": dropped},
                       "machine": {"steal_s": 0.01 * t, "load1": 1.5}})


def test_growth_and_ratios_are_measured_after_the_warm_up(tmp_path: Path) -> None:
    samples = [_sample(0, 100, 40, 0, 5, 900.0),  # warm-up: model load, first misses and drops are not counted
               _sample(60, 400, 50, 1000, 5), _sample(120, 404, 50, 2000, 6, 45.0), _sample(180, 412, 53, 3000, 8)]
    episodes = [{"success": True}, {"success": False}, {"success": True}]
    report = summarize_soak(samples, episodes, 60.0, 50.0, {}, {"minutes": 3})
    assert report["rss"]["vla_node"]["growth_pct"] == pytest.approx(3.0)   # 400 -> 412 MB
    assert report["deadline_misses"] == 3 and report["control_ticks"] == pytest.approx(50 * 120)
    assert report["deadline_miss_ratio"] == pytest.approx(3 / 6000)
    assert report["observations_dropped"] == 3 and report["observations_published"] == 2000
    assert report["control_rate_achieved_hz"] == pytest.approx(49.0) and report["control_gap_ms_max"] == 45.0
    cpus = os.cpu_count() or 1
    assert report["machine"]["steal_pct"] == pytest.approx(1.0 / cpus) and report["machine"]["load1_mean"] == 1.5
    assert report["successes"] == 2 and report["passed"] is True
    crashed = summarize_soak(samples, episodes, 60.0, 50.0, {"vla_node": -9}, {})
    assert crashed["passed"] is False
    leaky = summarize_soak([*samples[:-1], _sample(180, 480, 53, 3000, 8)], episodes, 60.0, 50.0, {}, {})
    assert leaky["rss_growth_max_pct"] == pytest.approx(20.0) and leaky["passed"] is False
    json_path, png_path = plot_soak(report, tmp_path / "soak")
    assert json.loads(json_path.read_text())["passed"] is True and png_path.stat().st_size > 10_000


def test_no_samples_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no soak samples"):
        summarize_soak([], [], 60.0, 50.0, {}, {})


@pytest.mark.ros
@pytest.mark.e2e
def test_ci_soak_three_minutes(ros_domain: int, tmp_path: Path) -> None:
    """`benchmarks/soak.py --minutes 3`: no crash, RSS growth <= 5% after warm-up, and the control loop keeps its rate
    (>= 50% of 50 Hz: a loop stalled half the time or more fails; a miss counts one per stall, however long) with at
    most one tick in five late. The 0.1% miss target is the 30-minute benchmark's on a quiet machine (0.046%,
    docs/SAFETY.md); a shared CI machine has shown 6.8% (the soak now prints CPU steal and cgroup throttling), so the
    script's own verdict is not asserted."""
    out = tmp_path / "soak_3min"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "3", "--warmup-s", "45",
                          "--out", str(out)], capture_output=True, text=True, timeout=480, cwd=ROOT)
    print(run.stdout[-3000:])
    report = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").is_file()
    assert not report["crashed"] and report["episodes"] >= 1
    assert report["rss_growth_max_pct"] <= 5.0
    assert report["control_rate_achieved_hz"] >= 0.5 * report["config"]["control_rate_hz"], report["machine"]
    assert report["deadline_miss_ratio"] <= 0.2, (report["deadline_miss_ratio"], report["machine"])
    assert run.returncode in (0, 1), run.stderr[-3000:]   # 1: ran to the end, verdict FAILED (deadline target)
