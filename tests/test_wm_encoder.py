"""A world model that ranks in another policy's latent (`wm_encoder`): the encoder's digest recorded with the world
model and checked wherever the two are paired, the second encoder pass in the sampler (in-process and in its child
process), the decision pipeline ranking in that latent, the default resolution, the release role and the bringup plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime_helpers import observation, tiny_models
from wm_vla.bringup import BringupArgs, build_plan
from wm_vla.models import release
from wm_vla.models.checkpoint import check_world_model_encoder, load_checkpoint, save_checkpoint, weights_digest
from wm_vla.models.errors import CheckpointError
from wm_vla.runtime.backends.torch_backend import TorchBackend
from wm_vla.runtime.decision import DecisionPipeline
from wm_vla.runtime.errors import BackendConfigError, BackendUnavailableError
from wm_vla.runtime.export import export_checkpoints
from wm_vla.runtime.ranker import score_candidates
from wm_vla.runtime.sampler_process import InlineSampler, SamplerConfig, SamplerProcess
from wm_vla.runtime.spec import candidate_noise
from wm_vla.training import pipeline
from wm_vla.training.pipeline import NO_ENCODER, is_shipped, resolve_wm_encoder

TASK = "touch the red cube"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An acting policy, a FiLM encoder policy (other weights, other normalisation) and a world model trained, as
    far as its checkpoint says, in the encoder's latent."""
    root = tmp_path_factory.mktemp("wm_encoder")
    policy, _ = tiny_models(0)
    encoder, wm = tiny_models(5, film=True)
    save_checkpoint(policy, root / "policy")
    save_checkpoint(encoder, root / "encoder", tensors={"adam/step": torch.ones(3)})  # a training checkpoint
    save_checkpoint(wm, root / "wm", extra={"policy": str(root / "encoder"),
                                            "encoder_digest": weights_digest(root / "encoder")})
    save_checkpoint(wm, root / "wm_legacy")  # saved before digests were recorded
    return {"policy": root / "policy", "encoder": root / "encoder", "wm": root / "wm", "wm_legacy": root / "wm_legacy",
            "root": root}


def test_weights_digest_ignores_extra_tensors_and_tells_weights_apart(models: dict[str, Path], tmp_path: Path) -> None:
    encoder, _, extra = load_checkpoint(models["encoder"], expect="policy")
    assert "adam/step" in extra
    save_checkpoint(encoder, tmp_path / "shipped")  # the inference-only copy: no optimiser state
    assert weights_digest(tmp_path / "shipped") == weights_digest(models["encoder"])
    assert weights_digest(models["policy"]) != weights_digest(models["encoder"])
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="pickle"):
        weights_digest(tmp_path / "pickled")


def test_a_world_model_refuses_the_latent_of_an_encoder_it_was_not_trained_in(models: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    check_world_model_encoder(models["wm"], models["encoder"])
    check_world_model_encoder(models["wm_legacy"], models["policy"])  # no digest recorded: nothing to check
    with pytest.raises(CheckpointError, match="trained in the latent of another policy's encoder"):
        check_world_model_encoder([models["wm_legacy"], models["wm"]], models["policy"])
    with pytest.raises(CheckpointError, match="wm_encoder"):
        TorchBackend.from_checkpoints(models["policy"], models["wm"])
    with pytest.raises(CheckpointError, match="another policy's encoder"):
        export_checkpoints(models["policy"], tmp_path / "onnx", models["wm"])
    assert TorchBackend.from_checkpoints(models["encoder"], models["wm"]).spec.has_world_model


def _sampler_cfg(models: dict[str, Path], **kw: object) -> SamplerConfig:
    return SamplerConfig(**{"backend": "torch", "policy": str(models["policy"]), "threads": 1, "warm_k": 2,
                            "wm_encoder": str(models["encoder"]), **kw})  # type: ignore[arg-type]


def test_the_sampler_adds_the_encoders_latent_in_process_and_in_its_child(models: dict[str, Path]) -> None:
    plain = InlineSampler(_sampler_cfg(models, wm_encoder=None))
    inline = InlineSampler(_sampler_cfg(models))
    child = SamplerProcess(_sampler_cfg(models))
    try:
        spec = inline.spec
        images, state = observation(spec, 3)
        noise = candidate_noise(spec.horizon, spec.action_dim, 4, 3)
        want = TorchBackend.from_checkpoints(models["encoder"]).encode(images, state, TASK).obs_latent
        without, a, b = (s.sample(images, state, TASK, noise) for s in (plain, inline, child))
        assert without.wm_latent.size == 0 and without.wm_encode_ms == 0.0
        for out in (a, b):
            np.testing.assert_array_equal(out.wm_latent, want)  # the encoder's own latent, bit-exact through the pipe
            np.testing.assert_array_equal(out.actions, without.actions)  # the policy's candidates are unchanged
            assert out.wm_encode_ms > 0.0
        assert not np.allclose(a.wm_latent, a.obs_latent)
        assert "world-model encoder" in inline.describe() and "world-model encoder" in child.describe()
    finally:
        for s in (plain, inline, child):
            s.close()


def test_an_encoder_that_sees_another_observation_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    other, _ = tiny_models(7, image_size=32)
    save_checkpoint(other, tmp_path / "other")
    with pytest.raises(BackendConfigError, match="must see the same observation"):
        InlineSampler(_sampler_cfg(models, wm_encoder=str(tmp_path / "other")))
    with pytest.raises(BackendUnavailableError):
        InlineSampler(_sampler_cfg(models, wm_encoder=str(tmp_path / "missing")))


def test_the_pipeline_ranks_in_the_encoders_latent_with_its_normalisation(models: dict[str, Path]) -> None:
    acting = TorchBackend.from_checkpoints(models["policy"])
    ranker = TorchBackend.from_checkpoints(models["encoder"], models["wm"])
    images, state = observation(acting.spec, 1)
    noise = candidate_noise(acting.spec.horizon, acting.spec.action_dim, 8, 1)
    d = DecisionPipeline(acting, wm_backend=ranker).decide(images, state, TASK, noise)
    z = ranker.encode(images, state, TASK).obs_latent
    assert d.wm_latent is not None and "wm_encode" in d.stage_ms
    np.testing.assert_array_equal(d.rank_latent, z)
    roll = ranker.rollout(z, d.actions)
    want = score_candidates(roll.progress, roll.failure_prob, d.actions, None, DecisionPipeline(acting).cfg)
    assert d.ranking is not None and d.chosen == want.chosen
    np.testing.assert_allclose(d.ranking.scores, want.scores, rtol=1e-6)
    # in the acting policy's latent the same world model scores the same candidates otherwise
    other = ranker.rollout(d.obs_latent, d.actions)
    assert np.abs(other.progress - roll.progress).max() > 1e-4
    assert DecisionPipeline(acting).decide(images, state, TASK, noise).ranking is None  # no world model: policy only


def test_the_default_encoder_goes_with_the_shipped_world_models(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    shipped = tmp_path / "tiny"
    (shipped / "wm_student").mkdir(parents=True)
    monkeypatch.setitem(release.SHIPPED_DIRS, "arm", shipped)
    assert pipeline.default_wm_encoder() is None
    assert resolve_wm_encoder("", True) is None  # shipped world models in the shipped policy's latent
    (shipped / "wm_encoder").mkdir()
    (shipped / "wm_encoder" / "config.json").write_text("{}")
    assert resolve_wm_encoder("", True) == str(shipped / "wm_encoder")
    assert resolve_wm_encoder(None, False) is None  # a world model of one's own: the acting policy's latent
    assert resolve_wm_encoder(NO_ENCODER, True) is None
    assert resolve_wm_encoder("ckpt/enc", False) == "ckpt/enc"
    assert is_shipped(None) and is_shipped(str(shipped / "wm_student")) and not is_shipped("outputs/tiny/wm_student")
    assert is_shipped([str(shipped / "wm_student"), str(shipped / "wm_teacher")])
    assert not is_shipped([str(shipped / "wm_student"), "elsewhere/wm"])


def test_both_model_nodes_get_the_same_encoder_and_none_without_ranking(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    monkeypatch.setitem(release.SHIPPED_DIRS, "arm", tmp_path)
    (tmp_path / "wm_encoder").mkdir()
    (tmp_path / "wm_encoder" / "config.json").write_text("{}")

    def params(**kw: object) -> dict[str, object]:
        plan = {n.name: n.parameters for n in build_plan(BringupArgs(robot="arm", **kw))}  # type: ignore[arg-type]
        assert plan["vla_node"]["wm_encoder"] == plan["world_model_node"]["wm_encoder"]
        return plan["vla_node"]

    assert params()["wm_encoder"] == str((tmp_path / "wm_encoder").resolve())
    assert params(rank=False)["wm_encoder"] == NO_ENCODER  # single sample: no second encoder pass
    assert params(world_model="mine/wm_student")["wm_encoder"] == NO_ENCODER
    assert params(world_model="mine/wm_student", wm_encoder="mine/enc")["wm_encoder"] == str(Path("mine/enc").resolve())


def test_the_encoder_ships_with_its_world_models_and_a_stale_one_is_removed(models: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "shipped"
    sources = {"policy": models["policy"], "wm_student": models["wm"], "wm_encoder": models["encoder"]}
    release.ship(sources, out)
    files = release.verify_release(out)
    assert {"wm_encoder/model.safetensors", "wm_student/config.json"} <= set(files)
    meta = json.loads((out / "wm_encoder" / "config.json").read_text())
    assert meta["kind"] == "policy" and "adam/step" not in load_checkpoint(out / "wm_encoder")[2]
    check_world_model_encoder(out / "wm_student", out / "wm_encoder")  # the digest survives shipping
    release.ship({"wm_teacher": models["wm"]}, out)  # a subset: the other roles stay listed
    assert set(release.verify_release(out)) == files.keys() | {"wm_teacher/config.json", "wm_teacher/model.safetensors"}
    release.ship({"wm_student": models["wm_legacy"]}, out)
    assert not (out / "wm_encoder").exists()
    assert not any(rel.startswith("wm_encoder/") for rel in release.verify_release(out))


def test_latency_bench_times_the_second_encoder_pass_in_the_ranked_decision(models: dict[str, Path], tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from wm_vla.cli import main

    out = tmp_path / "lat"
    args = ["latency", "bench", "--policy", str(models["policy"]), "--wm", str(models["wm"]), "--k", "2",
            "--iters", "2", "--warmup", "1", "--threads", "1", "--no-progress"]
    assert main([*args, "--wm-encoder", str(models["encoder"]), "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["meta"]["wm_encoder"] == str(models["encoder"])
    for row in report["rows"]:  # torch and onnxruntime (its own export of the encoder + world model)
        assert ("wm_encode" in row["stage_p50_ms"]) == row["ranked"], row
    assert {"torch ranked/policy-only", "onnxruntime ranked/policy-only"} <= set(report["ratios"])
    capsys.readouterr()
    assert main(args) != 0  # without it, the world model would rank in the acting policy's latent: refused
    assert "another policy's encoder" in capsys.readouterr().err


def test_latency_profile_and_tune_time_the_encoder_pass_and_hand_it_to_both_nodes(
        models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from wm_vla.cli import main

    common = ["--policy", str(models["policy"]), "--wm", str(models["wm"]), "--k", "2", "--steps", "2",
              "--onnx-cache", str(tmp_path / "exports"), "--no-progress"]
    profile = ["latency", "profile", *common, "--backend", "onnxruntime,torch", "--decisions", "2", "--warmup", "1",
               "--threads", "1"]
    assert main([*profile, "--wm-encoder", str(models["encoder"]), "--out", str(tmp_path / "prof")]) == 0
    report = json.loads((tmp_path / "prof.json").read_text())
    assert report["stage_status"]["wm_encode"] == "measured" and report["meta"]["wm_encoder"] == str(models["encoder"])
    for row in report["rows"]:  # the decision includes the second encoder pass
        stages = row["stages_ms"]
        assert "wm_encode" in stages and row["decision_ms"]["max"] >= stages["wm_encode"]["max"]
    assert json.loads((tmp_path / "exports" / "wm_encoder" / "export.json").read_text())["sources"] == {
        "policy": str(models["encoder"]), "world_model": str(models["wm"])}
    capsys.readouterr()
    assert main(profile) != 0  # the world model would be timed in the acting policy's latent: refused
    assert "another policy's encoder" in capsys.readouterr().err

    out = tmp_path / "tuned"
    assert main(["latency", "tune", *common, "--wm-encoder", str(models["encoder"]), "--device", "cpu-2core",
                 "--exec-horizon", "2", "--measurements", str(tmp_path / "prof.json"), "--verify-decisions", "2",
                 "--budget-ms", "100000", "--out", str(out)]) == 0
    chosen = json.loads(out.with_suffix(".json").read_text())["chosen"]
    params = yaml.safe_load(out.with_suffix(".yaml").read_text())
    vla, wm = params["vla_node"]["ros__parameters"], params["world_model_node"]["ros__parameters"]
    assert vla["wm_encoder"] == wm["wm_encoder"] == str(models["encoder"])
    if chosen["backend"] != "torch":  # world_model_node runs the encoder's export, vla_node the policy's
        assert wm["onnx_dir"] == str(tmp_path / "exports" / "wm_encoder") != vla["onnx_dir"]
    from wm_vla.eval.latency_tune import params_yaml

    tuned = json.loads(out.with_suffix(".json").read_text())
    tuned["chosen"].update(k=1, backend="onnxruntime")  # no ranking: neither node pairs an encoder (as `wm-vla up`)
    single = yaml.safe_load(params_yaml(tuned, 1))
    vla, wm = single["vla_node"]["ros__parameters"], single["world_model_node"]["ros__parameters"]
    assert vla["wm_encoder"] == wm["wm_encoder"] == "none" and wm["onnx_dir"] == vla["onnx_dir"] and not wm["rank"]
