"""Latency tools: device profiles, the budget solver, `wm-vla latency profile` and `wm-vla latency tune`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from runtime_helpers import save_models, tiny_models
from wm_vla.cli import main
from wm_vla.runtime.errors import DeviceProfileError, LatencyConfigError
from wm_vla.runtime.latency import known_devices, load_device, parse_device
from wm_vla.runtime.latency.devices import devices_dir
from wm_vla.runtime.latency.solver import Candidate, QualityModel, Verdict, judge, ranked, search_space

EXPECTED_DEVICES = {"jetson-orin-agx", "jetson-orin-nx", "jetson-orin-nano", "jetson-thor", "rtx-desktop",
                    "rtx-laptop", "cpu-2core"}


# ----- device profiles -----
def test_every_shipped_device_profile_loads_with_sane_priors() -> None:
    assert set(known_devices()) >= EXPECTED_DEVICES
    for name in known_devices():
        dev = load_device(name)
        assert dev.name == name and dev.default_budget_ms > 0 and dev.caveats
    orin = load_device("jetson-orin-agx")
    assert "fp8" not in orin.precisions and orin.unified_memory and orin.backends[0] == "tensorrt"
    assert "fp8" in load_device("jetson-thor").precisions
    assert load_device("cpu-2core").backends == ("onnxruntime", "torch")
    assert orin.search_precisions("tensorrt") == ["fp32", "fp16", "int8"]
    assert orin.search_precisions("onnxruntime") == ["fp32"]


def _yaml_with(**changes: object) -> str:
    data = yaml.safe_load((devices_dir() / "jetson-orin-nx.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return yaml.safe_dump(data)


@pytest.mark.parametrize(("text", "message"), [
    ("name: [unclosed", "invalid YAML"),
    ("- just a list", "expected a mapping"),
    (_yaml_with(colour="green"), "unknown key"),
    (_yaml_with(memory_gb=None), "memory_gb: required field is missing"),
    (_yaml_with(memory_gb="lots"), "memory_gb: expected float"),
    (_yaml_with(precisions=["fp32", "fp9"]), "precisions[1]: unknown precision 'fp9'"),
    (_yaml_with(precisions=["fp16"]), "every device runs fp32"),
    (_yaml_with(backends=["tensorrt", "tensorrt"]), "at most once"),
    (_yaml_with(backends=["tflite"]), "unknown backend 'tflite'"),
    (_yaml_with(kind="cpu"), "a cpu device cannot run tensorrt"),
    (_yaml_with(budget_margin=1.5), "budget_margin: out of range"),
    (_yaml_with(kind="phone"), "kind: must be one of"),
])
def test_malformed_device_profiles_are_typed_errors_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(DeviceProfileError) as err:
        parse_device(text, "bad.yaml")
    assert message in str(err.value) and "bad.yaml" in str(err.value)


def test_unknown_device_names_list_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DeviceProfileError, match="known: .*jetson-orin-agx"):
        load_device("jetson-tx1")
    with pytest.raises(DeviceProfileError, match="no device profile"):
        load_device(tmp_path / "missing.yaml")


# ----- solver -----
def test_search_space_says_why_backends_and_precisions_are_left_out() -> None:
    orin = load_device("jetson-orin-agx")
    cands, skipped = search_space(orin, (1, 16), (4,), (8,), 16,
                                  {"tensorrt": "the TensorRT Python package is not installed", "onnxruntime": None,
                                   "torch": None})
    reasons = dict(skipped)
    assert "TensorRT Python package is not installed" in reasons["tensorrt"]
    assert reasons["onnxruntime fp16"] == "not implemented by our onnxruntime backend (fp32)"
    assert {(c.backend, c.precision) for c in cands} == {("onnxruntime", "fp32"), ("torch", "fp32")}
    thor = load_device("jetson-thor")
    _, skipped = search_space(thor, (1,), (4,), (8,), 16, {"tensorrt": None, "onnxruntime": None, "torch": None})
    assert "not implemented by our tensorrt backend" in dict(skipped)["tensorrt fp8"]
    _, skipped = search_space(orin, (1,), (4,), (8,), 16, {"tensorrt": None, "onnxruntime": None, "torch": None})
    assert dict(skipped)["tensorrt fp8"] == "jetson-orin-agx does not run fp8"
    with pytest.raises(LatencyConfigError, match="outside 1..16"):
        search_space(orin, (1,), (4,), (32,), 16, {})


def _eval_report(path: Path, rows: list[tuple[str, int, int, int]], steps: int = 10, exec_h: int = 8) -> Path:
    path.write_text(json.dumps({"denoise_steps": steps, "exec_horizon": exec_h, "configs": [
        {"name": n, "k": k, "policy": "main", "successes": s, "episodes": e} for n, k, s, e in rows]}))
    return path


def test_quality_comes_from_eval_results_else_from_the_fitted_proxy(tmp_path: Path) -> None:
    f = _eval_report(tmp_path / "eval.json", [("single", 1, 40, 100), ("rank", 16, 60, 100), ("oracle", 16, 90, 100)])
    model = QualityModel.from_eval_files([f], trained_steps=10, horizon=16)
    q, src = model.quality(Candidate("onnxruntime", "fp32", 16, 10, 8))
    assert q == pytest.approx(0.60) and src.startswith("eval eval.json")  # the oracle row is not deployable
    q_int8, src_int8 = model.quality(Candidate("tensorrt", "int8", 16, 10, 8))
    assert q_int8 < q and "int8 penalty" in src_int8
    proxy = {k: model.quality(Candidate("onnxruntime", "fp32", k, 10, 4))[0] for k in (1, 4, 16, 64, 256)}
    assert proxy[1] < proxy[4] < proxy[16] < proxy[64] == proxy[256]  # fitted gain, saturating at K=64
    assert model.quality(Candidate("onnxruntime", "fp32", 16, 4, 4))[0] < proxy[16]  # fewer steps cost quality
    bad = tmp_path / "bad.json"
    bad.write_text('{"configs": []}')
    with pytest.raises(LatencyConfigError, match="not a `wm-vla eval` report"):
        QualityModel.from_eval_files([bad], 10, 16)


def test_judge_gives_every_rejection_its_reason() -> None:
    dev = load_device("cpu-2core")  # margin 0.2
    vs = [Verdict(Candidate("onnxruntime", "fp32", 64, 10, 8), 0.7, "proxy", p99_ms=90.0, p50_ms=50.0),
          Verdict(Candidate("onnxruntime", "fp32", 16, 10, 1), 0.6, "proxy", p99_ms=60.0, p50_ms=40.0),
          Verdict(Candidate("onnxruntime", "fp32", 8, 10, 2), 0.6, "proxy", p99_ms=75.0, p50_ms=82.0),
          Verdict(Candidate("onnxruntime", "fp32", 16, 10, 8), 0.6, "proxy", p99_ms=60.0, p50_ms=40.0),
          Verdict(Candidate("onnxruntime", "fp32", 4, 10, 8), 0.5, "proxy", p99_ms=20.0, p50_ms=10.0),
          Verdict(Candidate("torch", "fp32", 4, 10, 8), 0.5, "proxy")]
    judge(vs, budget_ms=100.0, device=dev, policy_rate_hz=20.0)
    assert "x (1 + margin 0.2) = 108.0 ms > budget 100 ms" in vs[0].reason
    assert "> the 50 ms an executed chunk of 1 actions lasts at 20 Hz" in vs[1].reason
    assert "keeps the device > 80% busy" in vs[2].reason
    assert vs[3].fits and vs[4].fits and vs[5].reason == "not measured"
    assert [v.candidate.k for v in ranked(vs)] == [16, 4]


# ----- the commands, on tiny real models -----
@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lat")
    policy_dir, wm_dir = save_models(*tiny_models(), root)
    return {"policy": policy_dir, "wm": wm_dir, "root": root}


@pytest.fixture(scope="module")
def profiled(ckpts: dict[str, Path]) -> Path:
    out = ckpts["root"] / "profile"
    assert main(["latency", "profile", "--policy", str(ckpts["policy"]), "--wm", str(ckpts["wm"]), "--robot", "sim",
                 "--backend", "onnxruntime,torch", "--k", "1,3", "--steps", "2,4", "--decisions", "3", "--warmup", "1",
                 "--threads", "1", "--onnx-cache", str(ckpts["root"] / "exports"), "--out", str(out),
                 "--no-progress"]) == 0
    return out


def test_profile_reports_percentiles_per_stage_memory_and_cpu(profiled: Path, capsys) -> None:
    report = json.loads(profiled.with_suffix(".json").read_text())
    rows = report["rows"]
    assert {(r["backend"], r["k"], r["steps"]) for r in rows} == {
        (b, k, s) for b in ("onnxruntime", "torch") for k in (1, 3) for s in (2, 4)}
    for r in rows:
        assert r["n"] == 3 and r["ranked"]
        assert set(r["stages_ms"]) >= {"capture", "preprocess", "encode", "sample", "wm_rollout", "score"}
        assert set(r["decision_ms"]) == {"p50", "p90", "p99", "max", "mean"}
        assert r["decision_ms"]["p50"] <= r["decision_ms"]["p99"] <= r["decision_ms"]["max"]
        assert r["end_to_end_ms"]["mean"] > r["decision_ms"]["mean"]  # + capture (MuJoCo render)
    status = report["stage_status"]
    assert status["encode"] == "measured" and status["publish"].startswith("not measured")
    assert report["memory"]["peak_rss_mb"] > 50 and report["cpu"]["cores"] >= 1
    assert (profiled.parent / "exports" / "steps2" / "export.json").is_file()
    assert profiled.with_suffix(".png").stat().st_size > 5_000


def test_tune_picks_a_fitting_config_writes_params_and_explains_rejections(ckpts, profiled: Path, capsys) -> None:
    report = json.loads(profiled.with_suffix(".json").read_text())
    slowest = max(r["decision_ms"]["p99"] for r in report["rows"])
    out = ckpts["root"] / "tuned_loose"
    args = ["latency", "tune", "--policy", str(ckpts["policy"]), "--wm", str(ckpts["wm"]), "--device", "cpu-2core",
            "--k", "1,3", "--steps", "2,4", "--exec-horizon", "2,4",
            "--measurements", str(profiled.with_suffix(".json")),
            "--verify-decisions", "3", "--onnx-cache", str(ckpts["root"] / "exports"), "--no-progress"]
    assert main([*args, "--budget-ms", str(100 * slowest + 1000), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "chosen:" in text and "re-measured" in text
    tuned = json.loads(out.with_suffix(".json").read_text())
    c = tuned["chosen"]
    assert (c["k"], c["steps"]) == (3, 4)  # everything fits: the best expected quality wins
    assert c["verified_p99_ms"] * 1.2 <= tuned["budget_ms"]
    params = yaml.safe_load(out.with_suffix(".yaml").read_text())
    vla, wm = params["vla_node"]["ros__parameters"], params["world_model_node"]["ros__parameters"]
    assert (vla["k"], vla["backend"]) == (3, c["backend"]) and wm["budget_ms"] == tuned["budget_ms"]
    assert vla["denoise_steps"] == 4  # the tuned steps reach the torch backend too, not only through an export
    assert wm["budget_k_levels"][0] == 3 and wm["rank"] is True
    from vla_node.node import PARAMETERS as VLA_PARAMETERS
    from world_model_node.node import PARAMETERS as WM_PARAMETERS

    # every key is a parameter the node declares (rclpy silently ignores undeclared ones), with the declared type
    for values, declared in ((vla, dict(VLA_PARAMETERS)), (wm, dict(WM_PARAMETERS))):
        assert set(values) <= set(declared), set(values) - set(declared)
        assert all(type(v) is type(declared[k]) for k, v in values.items()), values
    assert all(v["reason"] for v in tuned["verdicts"])
    assert tuned["skipped"] == []  # cpu-2core: both of its backends run here, fp32 only

    out = ckpts["root"] / "tuned_tight"
    assert main([*args, "--budget-ms", "0.001", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "no configuration fits a 0.001 ms budget on cpu-2core" in err and "budget must be at least" in err
    rejected = json.loads(out.with_suffix(".json").read_text())
    assert rejected["chosen"] is None and all("> budget 0.001 ms" in v["reason"] for v in rejected["verdicts"])


def test_tune_inputs_are_checked(ckpts, tmp_path: Path, capsys) -> None:
    base = ["latency", "tune", "--policy", str(ckpts["policy"]), "--out", str(tmp_path / "t"), "--no-progress"]
    assert main([*base, "--device", "jetson-tx1"]) == 2
    assert "no device profile" in capsys.readouterr().err
    bad = tmp_path / "m.json"
    bad.write_text('{"rows": [{"backend": "torch"}]}')
    assert main([*base, "--measurements", str(bad), "--budget-ms", "50"]) == 2
    assert "not a `wm-vla latency profile` report" in capsys.readouterr().err
    assert main(["latency", "profile", "--policy", str(ckpts["policy"]), "--backend", "tflite"]) == 2
    assert "unknown backend" in capsys.readouterr().err
