"""`wm-vla demo` settings reach the plan of both stacks; bad ones fail before anything runs or is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from wm_vla.cli import main
from wm_vla.eval.ros_demo import DemoConfig, demo_plan


def _params(plan: list, node: str) -> dict:
    return next(n.parameters for n in plan if n.name == node)


def test_params_file_overrides_reach_both_stacks(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("vla_node:\n  ros__parameters:\n    inference_process: false\n    worker_nice: 0\n")
    cfg = DemoConfig(params_file=str(params))
    ranked, single = demo_plan(cfg, True), demo_plan(cfg, False)
    for plan, k in ((ranked, 16), (single, 1)):
        vla = _params(plan, "vla_node")
        assert vla["inference_process"] is False and vla["worker_nice"] == 0 and vla["k"] == k
    assert _params(ranked, "world_model_node")["rank"] is True and _params(single, "world_model_node")["rank"] is False
    assert "inference_process" not in _params(demo_plan(DemoConfig(), True), "vla_node")  # the node's default


@pytest.mark.parametrize("text", ["vla_node: [1, 2]\n", "no_such_node:\n  ros__parameters: {k: 1}\n", "{unclosed"])
def test_bad_params_file_is_refused_before_anything_runs(tmp_path: Path, text: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    params, out = tmp_path / "params.yaml", tmp_path / "demo"
    params.write_text(text)
    assert main(["demo", "--params-file", str(params), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wm-vla: error:") and str(params) in err  # names the file
    assert ("ros__parameters" in err) or ("cannot read the params file" in err)
    assert not out.exists()


def test_missing_params_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--params-file", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "demo")]) == 2
    assert "cannot read the params file" in capsys.readouterr().err
