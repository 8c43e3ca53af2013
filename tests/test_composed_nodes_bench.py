"""benchmarks/composed_nodes.py: the composed plan it runs and its refusal of bad layouts and plans."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import pytest
from script_helpers import load_script

from wm_vla.bringup import BringupArgs, build_plan


def _module() -> Any:
    return load_script("benchmarks/composed_nodes.py")


def test_compose_puts_the_three_model_nodes_in_one_process_with_each_nodes_own_parameters() -> None:
    bench = _module()
    plan = build_plan(BringupArgs(robot="sim", backend="onnxruntime", k=16, denoise_steps=7, inference_cpus="0"))
    composed = bench.compose(plan)
    names = [n.name for n in composed]
    assert names == [n.name for n in plan if n.name not in bench.MODEL_NODES] + [bench.COMPOSED]
    nodes = composed[-1].parameters["nodes"]
    assert sorted(nodes) == sorted(bench.MODEL_NODES)
    for spec in plan:
        if spec.name in bench.MODEL_NODES:
            assert "cpu_affinity" in spec.parameters  # the plan pins them; the composed layout pins itself
            assert nodes[spec.name] == {k: v for k, v in spec.parameters.items() if k != "cpu_affinity"}
    assert nodes["vla_node"]["denoise_steps"] == 7 and nodes["vla_node"]["k"] == 16


def test_compose_refuses_a_plan_it_cannot_run() -> None:
    bench = _module()
    plan = build_plan(BringupArgs(robot="sim"))
    remapped = [replace(n, remappings=(("/a", "/b"),)) if n.name == "world_model_node" else n for n in plan]
    with pytest.raises(SystemExit, match="remappings"):
        bench.compose(remapped)
    with pytest.raises(SystemExit, match="vla_node"):
        bench.compose([n for n in plan if n.name != "vla_node"])


def test_unknown_layout_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    bench = _module()
    monkeypatch.setattr(sys, "argv", ["composed_nodes.py", "--layouts", "separate,threads", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="threads"):
        bench.main()
    assert not any(tmp_path.iterdir())
