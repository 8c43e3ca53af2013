"""ONNX export: graphs, names and metadata, parity with torch (K = 1 and 16), TensorRT operator check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from runtime_helpers import observation, save_models, tiny_models
from wm_vla.cli import main
from wm_vla.models.flare_policy import ObsBatch
from wm_vla.runtime.backends.ort_backend import OrtBackend
from wm_vla.runtime.backends.torch_backend import TorchBackend
from wm_vla.runtime.errors import ExportError, UnsupportedOperatorError
from wm_vla.runtime.export import GRAPH_IO, export_models, load_export, sha256_file
from wm_vla.runtime.parity import require
from wm_vla.runtime.trt_ops import check_model, require_supported, support_list
from wm_vla.runtime.verify import compare_backends

# flare_layer 1 of 2: the last DiT block runs on action rows only; flare_layer 2: it must keep the future tokens
# film: the instruction conditions the CNN, so the encoder graph's image path depends on the token ids too
VARIANTS = {"flare_mid": {}, "flare_last": {"flare_layer": 2}, "film": {"film": True}}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    policy, wm = tiny_models(**VARIANTS[request.param])
    out = tmp_path_factory.mktemp(f"onnx_{request.param}")
    info = export_models(policy, out, wm, sources={"policy": "in-test"})
    return policy, wm, info


def test_export_writes_the_documented_graphs_names_and_metadata(exported) -> None:
    policy, _wm, info = exported
    meta = json.loads((info.directory / "export.json").read_text())
    spec = meta["spec"]
    assert (spec["preset"], spec["horizon"], spec["action_dim"], spec["steps"]) == ("tiny", 8, 7, 4)
    np.testing.assert_allclose(meta["normalization"]["action_std"], policy.action_std.numpy(), rtol=1e-6)
    assert meta["opset"] == 20 and set(meta["graphs"]) == {"encoder", "sampler", "world_model"}
    for name in info.graph_names:
        model = onnx.load(str(info.graph_path(name)))
        assert [i.name for i in model.graph.input] == GRAPH_IO[name]["inputs"]
        assert [o.name for o in model.graph.output] == GRAPH_IO[name]["outputs"]
        props = {p.key: p.value for p in model.metadata_props}
        assert props["wm_vla.graph"] == name and json.loads(props["wm_vla.spec"])["steps"] == 4
        assert json.loads(props["wm_vla.normalization"]) == meta["normalization"]
        assert meta["graphs"][name]["sha256"] == sha256_file(info.graph_path(name))
    sampler = onnx.load(str(info.graph_path("sampler")))
    noise = next(i for i in sampler.graph.input if i.name == "noise")
    assert noise.type.tensor_type.shape.dim[0].dim_param == "K"  # dynamic K, the rest fixed
    assert [d.dim_value for d in noise.type.tensor_type.shape.dim[1:]] == [8, 7]


@pytest.mark.parametrize("k", [1, 16])
def test_onnxruntime_matches_torch(exported, k: int) -> None:
    policy, wm, info = exported
    figures = compare_backends(TorchBackend(policy, wm), OrtBackend(info.directory, "cpu", threads=1), ks=(k,))[k]
    assert set(figures) == {"obs_latent", "actions", "future_latents", "next_latent", "progress", "failure_prob"}
    require(figures, max_abs=1e-4, min_cosine=0.9999, what=f"onnxruntime K={k}")


def test_unrolled_sampler_reproduces_flare_policy_sample(exported) -> None:
    """The ONNX sampler, fed the recorded noise, gives FlarePolicy.sample's chunks (the real reference path)."""
    policy, _wm, info = exported
    spec = info.spec
    images, state = observation(spec, seed=3)
    ref = policy.sample(ObsBatch(torch.from_numpy(images), torch.from_numpy(state), ["touch the green cube"]), 5,
                        generator=torch.Generator().manual_seed(9))
    ort = OrtBackend(info.directory, "cpu", threads=1)
    cand = ort.sample(ort.encode(images, state, "touch the green cube"), ref.noise.numpy())
    np.testing.assert_allclose(cand.actions, ref.actions.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(cand.future_latents, ref.future_latents.numpy(), atol=1e-4, rtol=0)


def test_exported_graphs_pass_the_tensorrt_operator_check(exported) -> None:
    counts = require_supported(exported[2].directory)
    assert set(counts) == {"encoder", "sampler", "world_model"} and min(counts.values()) > 10


def _graph(nodes: list, opset: int = 17, inputs: tuple[str, ...] = ("x",), initializers: list | None = None):
    x = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in inputs]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", x, [y], initializer=initializers or [])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_unsupported_operators_and_opsets_fail_the_check() -> None:
    unique = _graph([helper.make_node("Unique", ["x"], ["y"], name="uniq")])
    assert [v.op_type for v in check_model(unique)] == ["Unique"]
    custom = _graph([helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft")])
    assert "custom domain" in check_model(custom)[0].reason
    assert "opset 21" in check_model(_graph([helper.make_node("Relu", ["x"], ["y"])], opset=21))[0].reason
    computed_axes = _graph([helper.make_node("Shape", ["x"], ["s"]),
                            helper.make_node("Unsqueeze", ["x", "s"], ["y"])], opset=13)
    assert "build-time constant" in check_model(computed_axes)[0].reason
    const_axes = _graph([helper.make_node("Unsqueeze", ["x", "a"], ["y"])], opset=13,
                        initializers=[helper.make_tensor("a", TensorProto.INT64, [1], [0])])
    assert check_model(const_axes) == []
    ln = _graph([helper.make_node("LayerNormalization", ["x", "x"], ["n", "mean"]),
                 helper.make_node("Add", ["n", "mean"], ["y"])])
    assert "first output" in check_model(ln)[0].reason


def test_an_export_with_an_unsupported_operator_fails_in_ci(exported, tmp_path: Path) -> None:
    """Inject a node TensorRT cannot parse into a real exported graph: the check names it."""
    import shutil

    info = exported[2]
    bad_dir = tmp_path / "bad"
    shutil.copytree(info.directory, bad_dir)
    model = onnx.load(str(bad_dir / "world_model.onnx"))
    out = model.graph.output[1].name  # progress
    for node in model.graph.node:
        node.output[:] = [f"{o}_pre" if o == out else o for o in node.output]
    model.graph.node.append(helper.make_node("Unique", [f"{out}_pre"], [out], name="injected_unique"))
    onnx.save(model, str(bad_dir / "world_model.onnx"))
    meta = json.loads((bad_dir / "export.json").read_text())
    meta["graphs"]["world_model"]["sha256"] = sha256_file(bad_dir / "world_model.onnx")
    (bad_dir / "export.json").write_text(json.dumps(meta))
    with pytest.raises(UnsupportedOperatorError, match="world_model: Unique \\(injected_unique\\)"):
        require_supported(bad_dir)


def test_support_list_records_its_source() -> None:
    data = support_list()
    assert data["source"]["repository"].endswith("onnx/onnx-tensorrt") and len(data["source"]["commit"]) == 40
    assert (data["opset_min"], data["opset_max"]) == (9, 20)
    assert "Unique" in data["unsupported"] and "LayerNormalization" in data["supported"]


def test_a_world_model_that_does_not_fit_the_policy_is_refused(tmp_path: Path) -> None:
    policy, _ = tiny_models()
    _, other = tiny_models(horizon=6)
    with pytest.raises(ExportError, match="does not fit"):
        export_models(policy, tmp_path / "x", other)


def test_policy_only_export_has_no_world_model_graph(tmp_path: Path) -> None:
    policy, _ = tiny_models()
    info = export_models(policy, tmp_path / "p")
    assert info.graph_names == ["encoder", "sampler"] and not info.spec.has_world_model
    assert load_export(tmp_path / "p").spec.steps == 4


def test_cli_export_then_engines_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy_dir, wm_dir = save_models(*tiny_models(), tmp_path)
    out = tmp_path / "onnx"
    assert main(["export", "--policy", str(policy_dir), "--wm", str(wm_dir), "--out", str(out), "--steps", "3"]) == 0
    text = capsys.readouterr().out
    assert "TensorRT operator check: ok" in text and "parity onnxruntime vs torch, K=16" in text
    assert load_export(out).spec.steps == 3
    assert main(["engines", "check", "--onnx", str(out)]) == 0
    assert "supported by TensorRT's ONNX parser" in capsys.readouterr().out
    assert main(["engines", "check", "--onnx", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
