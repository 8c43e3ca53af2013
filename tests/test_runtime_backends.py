"""Backends: selection and fallback reasons, typed errors for bad files and inputs, engine cache, determinism."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime_helpers import observation, save_models, tiny_models
from wm_vla.cli import main
from wm_vla.models.config import from_dict
from wm_vla.models.errors import ModelConfigError
from wm_vla.robots import load_profile
from wm_vla.runtime.backends import BackendConfig, select_backend
from wm_vla.runtime.backends.ort_backend import OrtBackend
from wm_vla.runtime.backends.torch_backend import TorchBackend
from wm_vla.runtime.calibration import calibration_feeds
from wm_vla.runtime.decision import DecisionPipeline, warm_up
from wm_vla.runtime.engine_cache import EngineCache, EngineKey
from wm_vla.runtime.errors import (BackendConfigError, BackendUnavailableError, EngineManifestError, InputShapeError,
                                   OnnxModelError)
from wm_vla.runtime.export import export_models, sha256_file
from wm_vla.runtime.ranker import GpcRanker, KinematicPenalty
from wm_vla.runtime.spec import candidate_noise

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_GPU = torch.cuda.is_available()
INSTRUCTION = "touch the red cube"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("backends")
    policy, wm = tiny_models(seed=1)
    policy_dir, wm_dir = save_models(policy, wm, root)
    info = export_models(policy, root / "onnx", wm, sources={"policy": str(policy_dir), "world_model": str(wm_dir)})
    return {"policy": policy, "wm": wm, "policy_dir": policy_dir, "wm_dir": wm_dir, "onnx": info.directory,
            "spec": info.spec}


@pytest.fixture(scope="module")
def backends(setup):
    return {"torch": TorchBackend(setup["policy"], setup["wm"]), "onnxruntime": OrtBackend(setup["onnx"], threads=1)}


# ----- selection and fallback -----
@pytest.mark.skipif(HAS_TRT or HAS_GPU, reason="checks the fallback on a machine without TensorRT and GPU")
def test_auto_falls_back_to_onnxruntime_cpu_with_a_logged_reason_per_step(setup, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="wm_vla.runtime.backends"):
        sel = select_backend(BackendConfig(onnx_dir=str(setup["onnx"]), threads=1))
    assert sel.chosen == "onnxruntime-cpu" and isinstance(sel.backend, OrtBackend)
    assert [f.candidate for f in sel.fallbacks] == ["tensorrt", "onnxruntime-gpu"]
    assert "TensorRT Python package is not installed" in sel.fallbacks[0].reason
    assert "CUDAExecutionProvider" in sel.fallbacks[1].reason
    logged = caplog.text
    assert "backend tensorrt unavailable" in logged and "backend onnxruntime-gpu unavailable" in logged


def test_missing_export_falls_back_to_torch_and_says_why(setup, tmp_path: Path) -> None:
    sel = select_backend(BackendConfig(backend="onnxruntime", device="cpu", onnx_dir=str(tmp_path / "none"),
                                       policy=str(setup["policy_dir"]), world_model=str(setup["wm_dir"])))
    assert sel.chosen == "torch" and sel.backend.spec.has_world_model
    assert [(f.candidate, f.reason.split(":")[0]) for f in sel.fallbacks] == [
        ("onnxruntime-gpu", "skipped"), ("onnxruntime-cpu", "OnnxModelError")]
    assert "does not exist" in sel.fallbacks[1].reason


def test_torch_backend_takes_checkpoints_and_steps_from_the_export(setup) -> None:
    sel = select_backend(BackendConfig(backend="torch", device="cpu", onnx_dir=str(setup["onnx"])))
    assert sel.chosen == "torch" and sel.fallbacks == [] and sel.backend.spec == setup["spec"]


def test_backend_config_comes_from_plain_yaml_json_data(setup) -> None:
    cfg = from_dict(BackendConfig, {"backend": "onnxruntime", "device": "cpu", "onnx_dir": str(setup["onnx"]),
                                    "k_profile": [1, 8, 32], "threads": 1})
    assert cfg.k_profile == (1, 8, 32) and select_backend(cfg).chosen == "onnxruntime-cpu"
    with pytest.raises(ModelConfigError, match="unknown BackendConfig keys: engine"):
        from_dict(BackendConfig, {"engine": "x"})


def test_without_fallback_the_first_failure_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="onnxruntime-cpu cannot run .*fallback is off"):
        select_backend(BackendConfig(backend="onnxruntime", device="cpu", onnx_dir=str(tmp_path), fallback=False))


def test_no_backend_at_all_lists_every_reason(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="(?s)no backend can run.*onnxruntime-cpu.*torch: .*policy"):
        select_backend(BackendConfig(device="cpu", onnx_dir=str(tmp_path / "none")))


def test_steps_override_the_policy_config_and_each_gets_its_own_export(setup, tmp_path: Path) -> None:
    from wm_vla.runtime.loading import checkpoint_key, open_backend

    policy, wm = str(setup["policy_dir"]), str(setup["wm_dir"])
    default_steps = setup["spec"].steps
    torch_sel = open_backend("torch", policy, wm, steps=3)
    ort_sel = open_backend("onnxruntime", policy, wm, threads=1, cache=tmp_path, steps=3)
    assert ort_sel.chosen == "onnxruntime-cpu" and torch_sel.backend.spec.steps == ort_sel.backend.spec.steps == 3
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint_key(policy, wm) + "-steps3"]
    images, state = observation(setup["spec"])
    noise = candidate_noise(setup["spec"].horizon, setup["spec"].action_dim, 4, 0)
    chunks = [DecisionPipeline(s.backend).decide(images, state, INSTRUCTION, noise).actions for s in (torch_sel, ort_sel)]
    np.testing.assert_allclose(chunks[0], chunks[1], atol=1e-4)  # the 3-step export samples like torch at 3 steps
    default = open_backend("torch", policy, wm).backend
    assert default.spec.steps == default_steps != 3
    assert np.abs(DecisionPipeline(default).decide(images, state, INSTRUCTION, noise).actions - chunks[0]).max() > 1e-3
    for s in (torch_sel, ort_sel):
        s.backend.close()


@pytest.mark.parametrize("steps", [0, -2, 2.5, True])
def test_bad_steps_are_a_typed_error(steps: object) -> None:
    with pytest.raises(BackendConfigError, match="steps must be a positive integer"):
        select_backend(BackendConfig(backend="torch", steps=steps))  # type: ignore[arg-type]


def test_an_export_made_for_other_steps_is_refused_not_run(setup) -> None:
    with pytest.raises(BackendUnavailableError, match=f"samples with {setup['spec'].steps} Euler steps, 3 were asked"):
        select_backend(BackendConfig(backend="onnxruntime", device="cpu", onnx_dir=str(setup["onnx"]), steps=3,
                                     fallback=False))
    from wm_vla.runtime.loading import open_backend

    with pytest.raises(OnnxModelError, match=f"steps: export {setup['spec'].steps} != asked 3"):  # not a torch fallback
        open_backend("onnxruntime", str(setup["policy_dir"]), str(setup["wm_dir"]), str(setup["onnx"]), steps=3)


@pytest.mark.parametrize("field, value", [("backend", "tflite"), ("device", "tpu"), ("precision", "fp8")])
def test_bad_backend_config_is_a_typed_error(field: str, value: str) -> None:
    with pytest.raises(BackendConfigError, match=field):
        select_backend(BackendConfig(**{field: value}))


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_tensorrt_backend_and_cli_say_clearly_that_tensorrt_is_missing(setup, capsys) -> None:
    from wm_vla.runtime.backends.trt_backend import TrtBackend

    with pytest.raises(BackendUnavailableError, match="TensorRT Python package is not installed"):
        TrtBackend(setup["onnx"])
    assert main(["engines", "build", "--onnx", str(setup["onnx"]), "--engines", "/nonexistent/engines"]) == 2
    assert "TensorRT Python package is not installed" in capsys.readouterr().err


# ----- bad files -----
def _copy_export(setup, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(setup["onnx"], tmp_path / "onnx")
    return tmp_path / "onnx"


def test_corrupt_onnx_is_detected_by_its_hash(setup, tmp_path: Path) -> None:
    d = _copy_export(setup, tmp_path)
    data = bytearray((d / "sampler.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "sampler.onnx").write_bytes(bytes(data))
    with pytest.raises(OnnxModelError, match="sampler.onnx does not match the SHA-256"):
        OrtBackend(d)


def test_truncated_onnx_with_a_matching_hash_fails_to_load_with_a_typed_error(setup, tmp_path: Path) -> None:
    d = _copy_export(setup, tmp_path)
    (d / "encoder.onnx").write_bytes((d / "encoder.onnx").read_bytes()[:2000])
    meta = json.loads((d / "export.json").read_text())
    meta["graphs"]["encoder"]["sha256"] = sha256_file(d / "encoder.onnx")
    (d / "export.json").write_text(json.dumps(meta))
    with pytest.raises(OnnxModelError, match="onnxruntime cannot load .*encoder.onnx"):
        OrtBackend(d)


@pytest.mark.parametrize("damage, match", [
    (lambda d: (d / "world_model.onnx").unlink(), "world_model graph world_model.onnx is missing"),
    (lambda d: (d / "export.json").unlink(), "not a wm_vla ONNX export"),
    (lambda d: (d / "export.json").write_text("{not json"), "not a valid export description"),
])
def test_missing_or_broken_export_files_are_typed_errors(setup, tmp_path: Path, damage, match: str) -> None:
    d = _copy_export(setup, tmp_path)
    damage(d)
    with pytest.raises(OnnxModelError, match=match):
        OrtBackend(d)


# ----- bad inputs -----
@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_wrong_input_shapes_raise_input_shape_error(backends, name: str) -> None:
    b = backends[name]
    spec = b.spec
    images, state = observation(spec)
    with pytest.raises(InputShapeError, match="images must have shape"):
        b.encode(images[:, :1], state, INSTRUCTION)
    with pytest.raises(InputShapeError, match="images must have shape"):
        b.encode(images[..., :32, :32], state, INSTRUCTION)
    with pytest.raises(InputShapeError, match="state must have shape"):
        b.encode(images, state[:, :5], INSTRUCTION)
    with pytest.raises(InputShapeError, match="NaN"):
        b.encode(images, np.full_like(state, np.nan), INSTRUCTION)
    enc = b.encode(images, state, INSTRUCTION)
    for noise in (np.zeros((0, 8, 7)), np.zeros((2, 16, 7)), np.zeros((2, 8)), np.zeros((2, 8, 6))):
        with pytest.raises(InputShapeError, match="noise must have shape"):
            b.sample(enc, noise)
    cand = b.sample(enc, np.zeros((2, 8, 7), np.float32))
    with pytest.raises(InputShapeError, match="actions must have shape"):
        b.rollout(enc.obs_latent, cand.actions[:, :4])
    with pytest.raises(InputShapeError, match="obs_latent must have shape"):
        b.rollout(enc.obs_latent[:8], cand)


def test_an_observation_encoded_by_another_backend_is_refused(backends) -> None:
    images, state = observation(backends["torch"].spec)
    enc = backends["torch"].encode(images, state, INSTRUCTION)
    with pytest.raises(InputShapeError, match="encoded by another backend"):
        backends["onnxruntime"].sample(enc, np.zeros((1, 8, 7), np.float32))


# ----- determinism with fixed noise -----
def test_fixed_noise_gives_the_same_decision_on_every_backend(setup, backends) -> None:
    spec = setup["spec"]
    penalty = KinematicPenalty(load_profile("arm"))
    images, state = observation(spec, seed=5)
    noise = candidate_noise(spec.horizon, spec.action_dim, 16, seed=11)
    decisions = {n: DecisionPipeline(b, penalty).decide(images, state, INSTRUCTION, noise) for n, b in backends.items()}
    t, o = decisions["torch"], decisions["onnxruntime"]
    np.testing.assert_allclose(o.actions, t.actions, atol=1e-4, rtol=0)
    np.testing.assert_allclose(o.ranking.scores, t.ranking.scores, atol=1e-4, rtol=0)
    assert o.chosen == t.chosen and np.ptp(t.ranking.scores) > 0  # ranking distinguishes the candidates
    # the same backend twice: bit-identical; candidate i does not depend on K
    again = DecisionPipeline(backends["onnxruntime"], penalty).decide(images, state, INSTRUCTION, noise)
    assert np.array_equal(again.actions, o.actions) and again.chosen == o.chosen
    ort = backends["onnxruntime"]
    one = ort.sample(ort.encode(images, state, INSTRUCTION), noise[:1])
    np.testing.assert_allclose(one.actions[0], o.actions[0], atol=1e-5, rtol=0)
    # and different noise gives different chunks
    other = ort.sample(ort.encode(images, state, INSTRUCTION), noise[::-1].copy())
    assert not np.allclose(other.actions[0], o.actions[0], atol=1e-3)


def test_pipeline_scores_like_the_gpc_ranker(setup, backends) -> None:
    spec, policy = setup["spec"], setup["policy"]
    penalty = KinematicPenalty(load_profile("arm"))
    images, state = observation(spec, seed=2)
    noise = candidate_noise(spec.horizon, spec.action_dim, 8, seed=4)
    d = DecisionPipeline(backends["onnxruntime"], penalty).decide(images, state, INSTRUCTION, noise)
    ranker = GpcRanker(setup["wm"], policy.action_mean, policy.action_std, penalty)
    ref = ranker.rank(torch.from_numpy(d.obs_latent), torch.from_numpy(d.actions))
    np.testing.assert_allclose(d.ranking.scores, ref.scores, atol=1e-5)
    assert d.chosen == ref.chosen and set(d.stage_ms) >= {"encode", "sample", "wm_rollout", "score", "total"}
    policy_only = DecisionPipeline(backends["onnxruntime"], penalty).decide(images, state, INSTRUCTION, noise, rank=False)
    assert policy_only.ranking is None and policy_only.chosen == 0 and np.array_equal(policy_only.actions, d.actions)


# ----- engine cache (pure Python; TensorRT builds the bytes on a GPU) -----
def _key(**kw) -> EngineKey:
    base = dict(graph="sampler", onnx_sha256="a" * 64, tensorrt_version="10.3.0", gpu="NVIDIA Orin",
                precision="fp16", profile=(1, 16, 64))
    return EngineKey(**{**base, **kw})


def test_engine_cache_uses_only_an_exactly_matching_engine(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = _key()
    builds: list[str] = []

    def build() -> bytes:
        builds.append("x")
        return b"engine-bytes-%d" % len(builds)

    path, how = cache.get_or_build(key, build)
    assert how.startswith("built (no engine for the sampler graph") and path.read_bytes() == b"engine-bytes-1"
    assert cache.get_or_build(key, build) == (path, "cached") and len(builds) == 1
    assert cache.require(key) == path
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = manifest["engines"][key.id]
    assert entry["key"]["gpu"] == "NVIDIA Orin" and entry["engine_file"] == path.name


@pytest.mark.parametrize("changed, field", [
    ({"tensorrt_version": "10.4.0"}, "tensorrt_version"), ({"gpu": "NVIDIA GeForce RTX 4090"}, "gpu"),
    ({"precision": "int8"}, "precision"), ({"onnx_sha256": "b" * 64}, "onnx_sha256"), ({"profile": (1, 8, 32)}, "profile"),
])
def test_a_mismatched_engine_is_refused_or_rebuilt_never_used(tmp_path: Path, changed: dict, field: str) -> None:
    cache = EngineCache(tmp_path)
    cache.store(_key(), b"old engine")
    current = _key(**changed)
    with pytest.raises(EngineManifestError, match=f"{field}: cached .* != current"):
        cache.require(current)
    path, how = cache.get_or_build(current, lambda: b"new engine")
    assert path.read_bytes() == b"new engine" and field in how


def test_a_tampered_engine_file_or_manifest_is_refused(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    path = cache.store(_key(), b"engine")
    path.write_bytes(b"engine, modified")
    with pytest.raises(EngineManifestError, match="does not match the SHA-256"):
        cache.require(_key())
    path.unlink()
    with pytest.raises(EngineManifestError, match="is missing"):
        cache.require(_key())
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(EngineManifestError, match="not an engine manifest"):
        cache.require(_key())
    with pytest.raises(EngineManifestError, match="precision"):
        _key(precision="fp8")


def test_int8_calibration_inputs_come_from_frames(setup) -> None:
    spec = setup["spec"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (10, 2, 3, 64, 64), dtype=np.uint8)
    feeds = calibration_feeds(setup["onnx"], images, rng.standard_normal((10, 7)).astype(np.float32),
                              ["touch the red cube"] * 10, frames=4, k=3)
    assert [len(feeds[g]) for g in ("encoder", "sampler", "world_model")] == [4, 4, 4]
    assert feeds["encoder"][0]["images"].shape == (1, 2, 3, 64, 64) and feeds["encoder"][0]["images"].max() <= 1
    assert feeds["sampler"][0]["noise"].shape == (3, spec.horizon, spec.action_dim)
    assert feeds["world_model"][0]["actions"].shape == (3, spec.horizon, spec.action_dim)


# ----- benchmark (speed is never asserted: only the report's shape) -----
def test_latency_bench_writes_interleaved_rows_json_and_png(setup, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lat"
    assert main(["latency", "bench", "--policy", str(setup["policy_dir"]), "--wm", str(setup["wm_dir"]),
                 "--onnx", str(setup["onnx"]), "--k", "1,3", "--iters", "2", "--warmup", "1", "--threads", "1",
                 "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    rows = report["rows"]
    assert {(r["backend"], r["k"], r["ranked"]) for r in rows} == {
        (b, k, r) for b in ("torch", "onnxruntime") for k in (1, 3) for r in (False, True)}
    assert all(set(r) >= {"backend", "device", "k", "ranked", "p50_ms", "p99_ms", "n"} and r["n"] == 2 for r in rows)
    assert set(report["ratios"]) == {"onnxruntime/torch policy-only", "onnxruntime/torch ranked",
                                     "torch ranked/policy-only", "onnxruntime ranked/policy-only"}
    assert max(report["max_abs_actions_vs_first_backend"]["onnxruntime"].values()) < 1e-4
    assert out.with_suffix(".png").stat().st_size > 5_000
    assert "onnxruntime/torch policy-only" in capsys.readouterr().out


def test_latency_bench_rejects_unknown_backends(capsys) -> None:
    assert main(["latency", "bench", "--backends", "tflite", "--policy", "x"]) == 2
    assert "unknown backend" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_warm_up_runs_every_model_once_and_leaves_decisions_unchanged(setup, name: str) -> None:
    """The nodes warm their backend up at configure; a warmed-up backend decides exactly like a fresh one."""
    fresh = {"torch": lambda: TorchBackend(setup["policy"], setup["wm"]),
             "onnxruntime": lambda: OrtBackend(setup["onnx"], threads=1)}[name]
    spec = fresh().spec
    images, state = observation(spec, 3)
    noise = candidate_noise(spec.horizon, spec.action_dim, 4, 11)
    reference = DecisionPipeline(fresh()).decide(images, state, "touch the red cube", noise)
    warmed = fresh()
    assert warm_up(warmed, 4) > 0
    assert warm_up(warmed, 64, sample=False) > 0      # K above the sampled one, rollout only
    again = DecisionPipeline(warmed).decide(images, state, "touch the red cube", noise)
    np.testing.assert_array_equal(again.actions, reference.actions)
    assert again.chosen == reference.chosen


def test_warm_up_of_a_policy_without_world_model_skips_the_rollout(setup) -> None:
    policy_only = TorchBackend(setup["policy"], None)
    assert not policy_only.spec.has_world_model
    assert warm_up(policy_only, 2, rollout=True) > 0   # no BackendUnavailableError: the rollout is skipped
