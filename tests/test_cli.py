"""The `wm-vla` command: groups, help, planned groups and error exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wm_vla.cli import main
from wm_vla.models.release import SHIPPED_DIR


def test_help_lists_every_group() -> None:
    proc = subprocess.run([sys.executable, "-m", "wm_vla.cli", "--help"], capture_output=True, text=True, check=True)
    for group in ("sim", "up", "demo", "train", "models", "eval", "export", "engines", "latency", "bag", "teleop"):
        assert group in proc.stdout


@pytest.mark.parametrize("group", ["engines", "latency", "teleop"])
def test_groups_without_a_command_ask_for_one(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([group]) == 2
    assert "choose a command" in capsys.readouterr().err


def test_sim_check_writes_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "check", "--world", "quadruped", "--episodes", "3", "--out", str(tmp_path / "q"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["success"]["trials"] == 3 and sum(report["expert_modes"].values()) == 3
    assert (tmp_path / "q.png").stat().st_size > 5_000
    assert "95% CI" in capsys.readouterr().out


def test_render_of_a_missing_dataset_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "render", "--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    assert "not a LeRobot dataset" in capsys.readouterr().err


def test_core_never_imports_rclpy() -> None:
    code = ("import sys, wm_vla.cli, wm_vla.sim, wm_vla.robots, wm_vla.data.lerobot_io, wm_vla.sim.collect, "
            "wm_vla.sim.arm_expert, wm_vla.sim.quadruped_expert, wm_vla.runtime.backends, wm_vla.runtime.export, "
            "wm_vla.runtime.decision, wm_vla.runtime.trt_ops, wm_vla.eval.latency_bench, wm_vla.eval.latency_profile, "
            "wm_vla.eval.latency_tune, wm_vla.runtime.latency; "
            "assert 'rclpy' not in sys.modules, 'rclpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("args", "message"), [
    (["eval", "sim", "--policy", "/nonexistent/policy", "--episodes", "1"], "does not exist"),
    (["eval", "sim", "--wm", str(SHIPPED_DIR / "wm_student"), "/nonexistent/wm", "--episodes", "1"],
     "/nonexistent/wm does not exist"),
    (["eval", "sim", "--wm", str(SHIPPED_DIR / "wm_student"), str(SHIPPED_DIR / "policy"),
      "--episodes", "1"], "expected a world_model"),
    (["eval", "sim", "--disagreement-weight", "1", "--episodes", "1"], "disagreement_weight needs an ensemble"),
    (["train", "policy", "--dataset", "/nonexistent/data", "--out", "/tmp/unused_ckpt", "--steps", "1"], "not a LeRobot dataset"),
    (["train", "world-model", "--dataset", "/nonexistent/data", "--policy", "/nonexistent/policy", "--out", "/tmp/x"],
     "does not exist"),
    (["train", "ranked-states", "--out", "/tmp/unused_states", "--seed", "999990", "--episodes", "20"], "held-out range"),
    (["train", "ranked-states", "--wm", "/nonexistent/wm", "--out", "/tmp/unused_states", "--episodes", "1"],
     "does not exist"),
    (["sim", "label-candidates", "--policy", str(SHIPPED_DIR / "policy"), "--out", "/tmp/unused_labels",
      "--execute-wm", "/nonexistent/wm", "--episodes", "1"], "does not exist"),
    (["sim", "label-candidates", "--policy", str(SHIPPED_DIR / "policy"), "--out", "/tmp/unused_labels",
      "--execute-wm", str(SHIPPED_DIR / "policy"), "--episodes", "1"], "expected a world_model"),
    (["sim", "label-candidates", "--policy", str(SHIPPED_DIR / "policy"), "--out", "/tmp/unused_labels",
      "--execute-wm", str(SHIPPED_DIR / "wm_student"), "--episodes", "1"], "latent of another policy's encoder"),
    (["train", "distill", "--dataset", "/nonexistent/data", "--policy", str(SHIPPED_DIR / "wm_encoder"), "--teacher",
      str(SHIPPED_DIR / "wm_teacher"), "--out", "/tmp/unused_student", "--ranked-states", "/nonexistent/states"],
     "not a ranked-states folder"),
    (["train", "distill", "--dataset", "/nonexistent/data", "--policy", "/nonexistent/policy", "--teacher", "/nonexistent/t",
      "--out", "/tmp/unused_student", "--decision-weight", "-1"], "weights must be >= 0: {'decision_weight': -1.0}"),
    (["train", "distill", "--dataset", "/nonexistent/data", "--policy", "/nonexistent/policy", "--teacher", "/nonexistent/t",
      "--out", "/tmp/unused_student", "--lr", "0"], "need lr > 0"),
    (["train", "distill", "--dataset", "/nonexistent/data", "--policy", "/nonexistent/policy", "--teacher", "/nonexistent/t",
      "--out", "/tmp/unused_student", "--batch-size", "0"], "batch_size >= 1"),
    (["train", "distill", "--dataset", "/nonexistent/data", "--policy", "/nonexistent/policy", "--teacher", "/nonexistent/t",
      "--out", "/tmp/unused_student", "--relative-weight", "1", "--switch-margin", "0"], "needs switch_margin > 0"),
])
def test_train_and_eval_report_bad_paths_in_one_line(args: list[str], message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("wm-vla: error:")


@pytest.mark.parametrize("speed", ["0", "-0.2", "3"])
def test_teleop_collect_rejects_a_bad_speed_cap_before_starting_anything(
        speed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demos"
    assert main(["teleop", "collect", "--episodes", "1", "--out", str(out), "--max-linear", speed]) == 2
    assert "teleop_max_linear must be in (0, 1] m/s" in capsys.readouterr().err
    assert not out.exists()


def test_distill_says_how_many_held_out_decisions_were_near_ties() -> None:
    from wm_vla.cli import ranked_decisions_line

    result = {"ranked_decision_agreement_heldout": 0.8028, "ranked_heldout_decisions": 497, "ranked_k": 16,
              "ranked_heldout_near_tie_share": 0.2656, "ranked_heldout_decision_agreement_clear": 0.8795}
    line = ranked_decisions_line(result)
    assert line is not None and line.startswith("held-out recorded decisions (497, K=16)")
    assert "in 0.803;" in line and "27% of them are near-ties" in line and line.endswith("0.879 on the others")
    only_ties = {**result, "ranked_heldout_near_tie_share": 1.0}
    del only_ties["ranked_heldout_decision_agreement_clear"]
    assert "on the others" not in str(ranked_decisions_line(only_ties))
    assert ranked_decisions_line({"top1_agreement_heldout": 0.7}) is None  # no --ranked-states: nothing to say
