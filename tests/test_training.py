"""Training pipeline on small real LeRobot datasets: policy (resume, torchrun/gloo), world model, distillation, eval."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from wm_vla.data.lerobot_io import LeRobotWriter, frame_features
from wm_vla.eval.closed_loop import (
    EvalConfig,
    build_ranker,
    candidate_outcomes,
    evaluate,
    load_policy,
    oracle_choice,
    run_episode,
    wm_latent,
)
from wm_vla.models.checkpoint import load_checkpoint, load_world_models, save_checkpoint
from wm_vla.models.errors import CheckpointError, ModelConfigError
from wm_vla.models.world_model import WorldModelOutput
from wm_vla.runtime.errors import RankerError
from wm_vla.runtime.ranker import GpcRanker, RankerConfig, score_candidates
from wm_vla.sim import make_expert, make_world
from wm_vla.sim.collect import CollectConfig, collect
from wm_vla.training.datasets import load_frames
from wm_vla.training.errors import DatasetFeatureError, TrainingConfigError
from wm_vla.training.train_policy import PolicyTrainConfig, train_policy
from wm_vla.training.train_world_model import (
    DistillConfig,
    WorldModelTrainConfig,
    build_transitions,
    distill,
    hindsight_dataset_parts,
    instruction_agreement,
    decision_slack,
    margin_picks,
    pick_failure_rates,
    Transitions,
    ranking_outlook,
    relative_score_loss,
    with_switch_bonus,
    teacher_instruction_groups,
    train_world_model,
)

SMALL_STEPS = 4


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_data")
    collect(CollectConfig(world="arm", episodes=3, out=root / "demos", image_size=64, progress=False))
    collect(CollectConfig(world="arm", episodes=2, out=root / "noisy", noise=1.0, seed=50, image_size=64, progress=False))
    return {"demos": root / "demos", "noisy": root / "noisy"}


@pytest.fixture(scope="module")
def policy_ckpt(datasets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "policy"
    train_policy(PolicyTrainConfig(dataset=str(datasets["demos"]), out=str(out), steps=SMALL_STEPS, batch_size=4,
                                   save_every=2, progress=False))
    return out


def test_policy_checkpoint_carries_config_vocab_and_normalisation(policy_ckpt: Path, datasets: dict[str, Path]) -> None:
    policy, extra, tensors = load_checkpoint(policy_ckpt, expect="policy")
    store = load_frames(datasets["demos"], 64, progress=False)
    assert extra["step"] == SMALL_STEPS and extra["world_size"] == 1
    assert set(store.tasks) and all(w in policy.cfg.vocab for t in store.tasks for w in t.split())
    torch.testing.assert_close(policy.action_mean, store.action.mean(0))
    assert any(k.startswith("opt/") for k in tensors), "optimiser state must be saved for resume"
    log = json.loads((policy_ckpt / "train_log.json").read_text())
    assert log["steps"] == SMALL_STEPS and log["history"]


def test_resume_continues_from_the_saved_step(policy_ckpt: Path, datasets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    subprocess.run(["cp", "-r", str(policy_ckpt), str(out)], check=True)
    before, _, _ = load_checkpoint(out, expect="policy")
    result = train_policy(PolicyTrainConfig(dataset=str(datasets["demos"]), out=str(out), steps=SMALL_STEPS + 2,
                                            batch_size=4, save_every=100, resume=True, progress=False))
    after, extra, _ = load_checkpoint(out, expect="policy")
    assert extra["step"] == SMALL_STEPS + 2 and result["steps"] == SMALL_STEPS + 2
    assert [h["step"] for h in extra["history"]][0] == 0  # history continued, not restarted
    assert not torch.equal(before.action_out.weight, after.action_out.weight)


def test_resume_with_a_dataset_of_other_dimensions_fails_clearly(policy_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    subprocess.run(["cp", "-r", str(policy_ckpt), str(out)], check=True)
    quad = tmp_path / "quad"
    collect(CollectConfig(world="quadruped", episodes=1, out=quad, image_size=64, progress=False))
    with pytest.raises(DatasetFeatureError, match="cameras|dims"):
        train_policy(PolicyTrainConfig(dataset=str(quad), out=str(out), steps=SMALL_STEPS + 1, resume=True, progress=False))


def test_dataset_without_images_is_rejected(tmp_path: Path) -> None:
    feats = frame_features((), 64, ("a", "b"), ("a", "b"), use_videos=False)
    writer = LeRobotWriter(tmp_path / "noimg", "local/noimg", 10, feats, robot_type="x")
    frames = [{"observation.state": np.zeros(2, np.float32), "action": np.zeros(2, np.float32),
               "next.success": np.array([False]), "next.failure": np.array([False]), "next.done": np.array([i == 2]),
               "episode_success": np.array([False]), "task": "t"} for i in range(3)]
    writer.write_episode(frames)
    writer.finalize()
    with pytest.raises(DatasetFeatureError, match="no image or video feature"):
        load_frames(tmp_path / "noimg", 64, progress=False)


def test_collected_frames_are_relabelled_for_the_other_instructions(policy_ckpt: Path, tmp_path: Path) -> None:
    collect(CollectConfig(world="arm", episodes=2, out=tmp_path / "touch", family="touch", image_size=64, progress=False))
    policy = load_checkpoint(policy_ckpt, expect="policy")[0]
    store = load_frames(tmp_path / "touch", policy.cfg.image_size, policy.cfg.cameras, progress=False)
    assert store.relabels == 2 and store.episode_success.all()  # the expert touched the named cube every time
    last = store.episode_end.unique()
    copies = store.hindsight()
    assert len(copies) == 2
    for a, (copy, keep) in enumerate(copies):
        assert copy.images is store.images and torch.equal(copy.action, store.action)  # nothing copied
        assert all(t != own and t.split()[2] != own.split()[2] for t, own in zip(copy.tasks, store.tasks))
        # touching the asked cube fails every other colour's task at that very frame, and never earlier
        assert torch.equal(keep, torch.arange(len(store))) and torch.equal(copy.episode_end, store.episode_end)
        assert torch.equal(torch.nonzero(copy.failure).flatten(), last) and not copy.episode_success.any()
        assert copy.tasks[0] == store.relabel_tasks[0][a]  # type: ignore[index]
    own = build_transitions(policy, [str(tmp_path / "touch")], progress=False)
    relabelled = hindsight_dataset_parts(policy, store)
    assert len(relabelled) == 2 and all(len(part[0]) == len(store) for part in relabelled)
    assert torch.equal(relabelled[0][1], own.chunk) and not torch.allclose(relabelled[0][0], own.z)  # other colour word
    assert float(relabelled[0][4].max()) == 0.0 < float(own.progress.max())  # no progress towards the other cubes
    teacher = train_world_model(WorldModelTrainConfig(datasets=[str(tmp_path / "touch")], policy=str(policy_ckpt),
                                                      out=str(tmp_path / "wm"), steps=3, batch_size=16,
                                                      hindsight_datasets=True, progress=False))
    assert teacher["transitions"] == 3 * len(store)  # own instruction + 2 relabelled copies
    # every frame is also a group of its three instructions; held-out frames say whether the own one scores highest
    assert 0.0 <= teacher["validation"]["top1_own_instruction_heldout"] <= 1.0
    grouped = build_transitions(policy, [str(tmp_path / "touch")], progress=False, hindsight_datasets=True)
    assert grouped.instruction_groups is not None and grouped.instruction_groups.shape == (len(store), 3)
    assert torch.equal(grouped.instruction_groups[:, 0], torch.arange(len(store)))
    assert torch.equal(grouped.chunk[grouped.instruction_groups[:, 1]], grouped.chunk[:len(store)])
    assert own.instruction_groups is None
    # the student inherits the teacher's choice among each frame's instructions (listwise KL across them)
    student = distill(DistillConfig(datasets=[str(tmp_path / "touch")], policy=str(policy_ckpt),
                                    teacher=str(tmp_path / "wm"), out=str(tmp_path / "student"), steps=3, states=4,
                                    batch_size=16, hindsight_datasets=True, progress=False))
    assert 0.0 <= student["top1_instruction_agreement_heldout"] <= 1.0
    history = json.loads((tmp_path / "student" / "train_log.json").read_text())["history"]
    assert "listwise_instruction" in history[0]
    wm = load_checkpoint(tmp_path / "wm", expect="world_model")[0]
    train_groups, held_groups, (train_scores, _) = teacher_instruction_groups(wm, grouped, torch.Generator())
    assert len(train_groups) + len(held_groups) == len(store) and len(held_groups) >= 1
    top2 = train_scores.topk(2, 1).values
    distinct = (top2[:, 0] - top2[:, 1]) > 1e-4  # no near-ties that batch-size rounding could flip
    assert int(distinct.sum()) >= 1
    assert instruction_agreement(wm, grouped, train_groups[distinct], train_scores[distinct]) == 1.0  # agrees with itself
    assert instruction_agreement(wm, grouped, train_groups[distinct], -train_scores[distinct]) == 0.0
    # the probe: which colour does a recorded motion serve, from z or from the tokens (chance 1/3)
    probe = _benchmark("latent_grounding_probe")
    assert probe.main(["--policy", str(policy_ckpt), "--dataset", str(tmp_path / "touch"), "--frames", "30",
                       "--steps", "3", "--out", str(tmp_path / "probe.json")]) == 0
    report = json.loads((tmp_path / "probe.json").read_text())
    assert report["frames"] == 30 and report["chance"] == pytest.approx(1 / 3) and 0 < report["heldout_frames"] < 30
    assert all(0.0 <= acc[s] <= 1.0 for acc in report["accuracy"].values() for s in ("heldout", "training"))
    # --no-hindsight datasets still load, and training on their (absent) copies is refused clearly
    collect(CollectConfig(world="arm", episodes=1, out=tmp_path / "plain", family="touch", image_size=64,
                          hindsight=False, progress=False))
    assert load_frames(tmp_path / "plain", 64, progress=False).hindsight() == []
    with pytest.raises(SystemExit, match="no hindsight labels"):
        probe.main(["--policy", str(policy_ckpt), "--dataset", str(tmp_path / "plain"), "--steps", "1"])
    with pytest.raises(DatasetFeatureError, match="no hindsight labels"):
        train_world_model(WorldModelTrainConfig(datasets=[str(tmp_path / "plain")], policy=str(policy_ckpt),
                                                out=str(tmp_path / "wm2"), steps=1, hindsight_datasets=True,
                                                progress=False))
    # the columns without their instructions, or instructions that do not fit, are typed errors
    sidecar = tmp_path / "touch" / "hindsight.json"
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({"relabels": 2, "instructions": {t: v[:1] for t, v in meta["instructions"].items()}}))
    with pytest.raises(DatasetFeatureError, match="hindsight labels must have 2 columns"):
        load_frames(tmp_path / "touch", 64, progress=False)
    sidecar.write_text("{not json")
    with pytest.raises(DatasetFeatureError, match="not a hindsight description"):
        load_frames(tmp_path / "touch", 64, progress=False)
    sidecar.unlink()
    with pytest.raises(DatasetFeatureError, match="incomplete hindsight labels"):
        load_frames(tmp_path / "touch", 64, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrun_two_cpu_processes_with_gloo(datasets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(_free_port()), "-m", "wm_vla.cli", "train", "policy",
                           "--dataset", str(datasets["demos"]), "--out", str(out), "--steps", "3", "--batch-size", "4",
                           "--no-progress"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, extra, _ = load_checkpoint(out, expect="policy")
    assert extra["world_size"] == 2 and extra["step"] == 3


@pytest.fixture(scope="module")
def world_models(policy_ckpt: Path, datasets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("wm")
    data = [str(datasets["demos"]), str(datasets["noisy"])]
    train_world_model(WorldModelTrainConfig(datasets=data, policy=str(policy_ckpt), out=str(root / "teacher"), steps=30,
                                            batch_size=64, progress=False))
    distill(DistillConfig(datasets=data, policy=str(policy_ckpt), teacher=str(root / "teacher"), out=str(root / "student"),
                          states=8, k=2, steps=30, batch_size=64, progress=False))
    return root / "teacher", root / "student"


def test_teacher_and_student_checkpoints(world_models: tuple[Path, Path]) -> None:
    teacher, t_extra, t_tensors = load_checkpoint(world_models[0], expect="world_model")
    student, s_extra, _ = load_checkpoint(world_models[1], expect="world_model")
    n_t = sum(p.numel() for p in teacher.parameters())
    n_s = sum(p.numel() for p in student.parameters())
    assert teacher.cfg.role == "teacher" and student.cfg.role == "student" and n_s * 5 < n_t
    assert "z_scale" in t_tensors and 0.0 <= s_extra["top1_agreement_train"] <= 1.0
    assert "listwise_kl" in s_extra["history"][0]
    assert {"failure_accuracy", "latent_cosine"} <= set(t_extra["validation"])


def test_ranked_states_record_the_ranked_decisions_and_train_the_student(
        policy_ckpt: Path, datasets: dict[str, Path], world_models: tuple[Path, Path], tmp_path: Path) -> None:
    from wm_vla.eval.closed_loop import HELDOUT_SEED
    from wm_vla.training.ranked_states import RankedStatesConfig, load_ranked_decisions, record_ranked_states

    states = tmp_path / "states"
    rec = record_ranked_states(RankedStatesConfig(policy=str(policy_ckpt), wm=str(world_models[1]), out=str(states),
                                                  episodes=1, k=4, progress=False))
    pc = load_checkpoint(policy_ckpt, expect="policy")[0].cfg
    z, c = load_ranked_decisions(states, str(policy_ckpt), pc.latent_dim, pc.horizon, pc.action_dim)
    assert rec["decisions"] >= 1 and z.shape == (rec["decisions"], pc.latent_dim)
    assert c.shape == (rec["decisions"], 4, pc.horizon, pc.action_dim)
    data = [str(datasets["demos"])]
    base = dict(datasets=data, policy=str(policy_ckpt), teacher=str(world_models[0]), states=8, k=2, steps=3,
                batch_size=16, progress=False)
    plain = distill(DistillConfig(**base, out=str(tmp_path / "plain")))  # type: ignore[arg-type]
    more = distill(DistillConfig(**base, out=str(tmp_path / "more"), ranked_states=[str(states)]))  # type: ignore[arg-type]
    assert more["candidates"] == plain["candidates"] + 4 * rec["decisions"]
    assert more["heldout_states"] == plain["heldout_states"]  # the labelled held-out states are the same
    # the recorded decisions are ranked as recorded, K=4 candidates each (not in the labelled groups' K=2), the last
    # tenth of them held out
    assert more["ranked_k"] == 4 and more["ranked_heldout_decisions"] == int(0.1 * rec["decisions"])
    assert 0.0 <= more["ranked_decision_agreement_train"] <= 1.0 and "ranked_k" not in plain
    held = more["ranked_heldout_decisions"] > 0
    assert ("ranked_decision_agreement_heldout" in more) == held  # no NaN figure for an empty held-out set
    if held:  # how many of them the teacher itself nearly decided the other way
        assert 0.0 <= more["ranked_heldout_near_tie_share"] <= 1.0
        assert ("ranked_heldout_decision_agreement_clear" in more) == (more["ranked_heldout_near_tie_share"] < 1.0)
    # the teacher alone (no ground truth) with the switch rule's score gains as a target: another student, and the
    # decision agreement under that rule reported beside the plain top-1
    relative = distill(DistillConfig(**base, out=str(tmp_path / "relative"), ground_truth_weight=0.0,  # type: ignore[arg-type]
                                     relative_weight=1.0, decision_weight=1.0))
    r_extra = load_checkpoint(tmp_path / "relative", expect="world_model")[1]
    assert {"relative_gain", "listwise_decision"} <= set(r_extra["history"][0]) and "relative_gain" not in json.loads(
        (tmp_path / "plain" / "train_log.json").read_text())["history"][0]
    assert r_extra["train_config"]["ground_truth_weight"] == 0.0
    for result in (plain, relative):
        assert 0.0 <= result["decision_agreement_heldout"] <= 1.0 and 0.0 <= result["decision_agreement_train"] <= 1.0
    p_weights = load_file(str(tmp_path / "plain" / "model.safetensors"))
    r_weights = load_file(str(tmp_path / "relative" / "model.safetensors"))
    assert any(not torch.equal(p_weights[k], r_weights[k]) for k in p_weights)
    # bad folders and configs: typed errors, nothing trained
    with pytest.raises(TrainingConfigError, match="held-out range"):
        RankedStatesConfig(policy="p", wm="w", out="o", seed=HELDOUT_SEED - 1, episodes=2).validate()
    with pytest.raises(DatasetFeatureError, match="not a ranked-states folder"):
        load_ranked_decisions(tmp_path, str(policy_ckpt), pc.latent_dim, pc.horizon, pc.action_dim)
    with pytest.raises(DatasetFeatureError, match="needs"):
        load_ranked_decisions(states, str(policy_ckpt), pc.latent_dim + 1, pc.horizon, pc.action_dim)
    other_k = tmp_path / "states_k2"
    record_ranked_states(RankedStatesConfig(policy=str(policy_ckpt), wm=str(world_models[1]), out=str(other_k),
                                            episodes=1, k=2, progress=False))
    with pytest.raises(DatasetFeatureError, match="different K"):
        distill(DistillConfig(**base, out=str(tmp_path / "mixed"), ranked_states=[str(states), str(other_k)]))  # type: ignore[arg-type]
    assert not (tmp_path / "mixed").exists()
    meta = json.loads((states / "meta.json").read_text())
    (states / "meta.json").write_text(json.dumps({**meta, "encoder_digest": "other"}))
    with pytest.raises(DatasetFeatureError, match="another encoder"):
        distill(DistillConfig(**base, out=str(tmp_path / "wrong"), ranked_states=[str(states)]))  # type: ignore[arg-type]
    assert not (tmp_path / "wrong").exists()
    (states / "meta.json").write_text(json.dumps(meta))
    tensors = load_file(str(states / "states.safetensors"))
    save_file({**tensors, "latent": tensors["latent"] * float("nan")}, str(states / "states.safetensors"))
    with pytest.raises(DatasetFeatureError, match="non-finite"):
        load_ranked_decisions(states, str(policy_ckpt), pc.latent_dim, pc.horizon, pc.action_dim)
    (states / "states.safetensors").write_bytes(b"truncated")
    with pytest.raises(DatasetFeatureError, match="unreadable"):
        load_ranked_decisions(states, str(policy_ckpt), pc.latent_dim, pc.horizon, pc.action_dim)


def test_eval_writes_the_documented_json(policy_ckpt: Path, world_models: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = dict(policy=str(policy_ckpt), wm=str(world_models[1]), episodes=2, ks=(2,), oracle_k=2, progress=False)
    report = evaluate(EvalConfig(**cfg, out=str(tmp_path / "eval"), jobs=2))  # type: ignore[arg-type]
    names = [(r["name"], r["k"]) for r in report["configs"]]
    assert names == [("single", 1), ("rank", 2), ("oracle", 2)]
    sequential = evaluate(EvalConfig(**cfg, teacher=str(world_models[0])))  # type: ignore[arg-type]
    # an ensemble of two copies of the student predicts what the student does: the same episodes
    twice = evaluate(EvalConfig(**{**cfg, "wm": [str(world_models[1])] * 2}))  # type: ignore[arg-type]
    assert [r["per_episode_success"] for r in twice["configs"]] == [r["per_episode_success"] for r in report["configs"]]
    assert [r["switched_decisions"] for r in twice["configs"]] == [r["switched_decisions"] for r in report["configs"]]
    rank_row = sequential["configs"][1]
    assert rank_row["teacher_agreement_decisions"] > 0 and 0.0 <= rank_row["teacher_agreement"] <= 1.0
    misses = rank_row["teacher_disagreements"]
    assert misses["switched"] + misses["kept"] + misses["other"] == round(
        rank_row["teacher_agreement_decisions"] * (1 - rank_row["teacher_agreement"]))
    keep = ("name", "k", "successes", "events", "switched_decisions")
    assert [{k: r[k] for k in keep} for r in sequential["configs"]] == [{k: r[k] for k in keep} for r in report["configs"]]
    saved = json.loads((tmp_path / "eval.json").read_text())
    for row in saved["configs"]:
        assert {"name", "k", "episodes", "successes", "success_rate", "ci95", "decision_ms_p50"} <= set(row)
        assert row["episodes"] == 2 and len(row["ci95"]) == 2
        assert sum(row["per_episode_success"]) == row["successes"] and len(row["per_episode_success"]) == 2
    assert [(p["config"], p["k"]) for p in saved["paired_vs_single"]] == [("rank", 2), ("oracle", 2)]
    for p, row in zip(saved["paired_vs_single"], saved["configs"][1:]):
        assert p["both"] + p["only_a"] == row["successes"] and p["both"] + p["only_b"] == saved["configs"][0]["successes"]
    assert (tmp_path / "eval.png").stat().st_size > 5_000


def test_eval_ranks_in_the_latent_of_the_given_encoder(policy_ckpt: Path, world_models: tuple[Path, Path],
                                                      datasets: dict[str, Path], tmp_path: Path) -> None:
    cfg = dict(policy=str(policy_ckpt), wm=str(world_models[1]), episodes=2, ks=(2,), oracle_k=0, progress=False)
    own = evaluate(EvalConfig(**cfg))  # type: ignore[arg-type]
    # the acting policy's own encoder as --wm-encoder: the same latent, so the same decisions
    same = evaluate(EvalConfig(**cfg, wm_encoder=str(policy_ckpt)))  # type: ignore[arg-type]
    keep = ("per_episode_success", "switched_decisions", "events")
    assert [{k: r[k] for k in keep} for r in same["configs"]] == [{k: r[k] for k in keep} for r in own["configs"]]
    assert same["wm_encoder"] == str(policy_ckpt) and own["wm_encoder"] is None
    other = tmp_path / "other_policy"  # same preset, another seed: another latent of the same size
    train_policy(PolicyTrainConfig(dataset=str(datasets["demos"]), out=str(other), steps=SMALL_STEPS, batch_size=4,
                                   seed=1, progress=False))
    acting, encoder = load_policy(str(policy_ckpt)), load_policy(str(other))
    seen: list[torch.Tensor] = []

    class RecordingRanker(GpcRanker):  # the real ranker, keeping the latent each decision is ranked in
        def rank(self, z: torch.Tensor, chunks: torch.Tensor, goal: torch.Tensor | None = None) -> Any:
            seen.append(z.clone())
            return super().rank(z, chunks, goal)

    wm, _ = load_world_models(str(world_models[1]))
    world = make_world("arm", image_size=64)
    observations: list[Any] = []
    run_episode(world, acting, "rank", 2, 5, RecordingRanker(wm, encoder.action_mean, encoder.action_std),
                on_decision=lambda obs, chunks, chosen: observations.append(obs), wm_encoder=encoder)
    world.close()
    assert len(seen) == len(observations) > 0
    for obs, z in zip(observations, seen):
        assert torch.equal(z, wm_latent(encoder, obs)) and not torch.allclose(z, wm_latent(acting, obs))
    wide = tmp_path / "base_policy"  # the base preset's 256-d latent: the tiny world models cannot read it
    train_policy(PolicyTrainConfig(dataset=str(datasets["demos"]), out=str(wide), preset="base", steps=1, batch_size=2,
                                   progress=False))
    with pytest.raises(CheckpointError, match="another policy's encoder"):  # its recorded encoder is policy_ckpt
        evaluate(EvalConfig(**cfg, wm_encoder=str(wide)))  # type: ignore[arg-type]
    legacy = tmp_path / "legacy_student"  # saved before encoder digests: the latent size still gives it away
    save_checkpoint(wm, legacy)
    with pytest.raises(RankerError, match="256-d"):
        evaluate(EvalConfig(**{**cfg, "wm": str(legacy)}, wm_encoder=str(wide)))  # type: ignore[arg-type]


def test_oracle_prefers_the_candidate_that_makes_true_progress() -> None:
    world = make_world("arm", render=False)
    world.reset(7, task="touch the red cube")
    start = world.get_state()
    expert = make_expert(world, np.random.default_rng(0))
    obs = world.observe()
    good = []
    for _ in range(8):
        action = expert.act(obs)
        good.append(world.check_action(action))
        obs = world.step(action).observation
    world.set_state(start)
    hold = np.tile(np.append(world.arm_q(), 0.0), (8, 1))  # type: ignore[attr-defined]
    assert oracle_choice(world, np.stack([hold, np.array(good)]), 8) == 1
    assert world.episode.steps == 0 and np.array_equal(world.get_state().physics, start.physics)


def test_following_a_candidate_counts_what_happens_after_its_chunk() -> None:
    world = make_world("arm", render=False)
    world.reset(7, task="touch the red cube")
    start = world.get_state()
    expert = make_expert(world, np.random.default_rng(0))
    obs, recorded, result = world.observe(), [], None
    while result is None or not result.done:
        action = world.check_action(expert.act(obs))
        recorded.append(action)
        result = world.step(action)
        obs = result.observation
    assert result.success and len(recorded) > 16  # the touch takes longer than one executed chunk
    world.set_state(start)
    replay = np.array(recorded + [recorded[-1]] * 8)
    follow = lambda _obs: replay[world.episode.steps: world.episode.steps + 8]  # noqa: E731  (the expert, replayed)
    chunks = replay[None, :16]
    myopic = candidate_outcomes(world, chunks, 8)
    followed = candidate_outcomes(world, chunks, 8, follow, follow_decisions=len(recorded) // 8 + 1)
    assert not myopic.success[0] and followed.success[0] and followed.scores()[0] > myopic.scores()[0]
    assert world.episode.steps == 0 and np.array_equal(world.get_state().physics, start.physics)


def test_gym_adapter_runs_the_eval_on_a_gymnasium_env(policy_ckpt: Path, world_models: tuple[Path, Path]) -> None:
    import gymnasium as gym

    from wm_vla.eval.gym_eval import evaluate_gym
    from wm_vla.sim.gym_env import SimGymEnv

    env = gym.make("wm_vla/Arm-v0")
    obs, info = env.reset(seed=3, options={"task": "touch the blue cube"})
    assert info["task"] == "touch the blue cube" and env.observation_space.contains(obs)
    assert isinstance(env.unwrapped, SimGymEnv)
    env.close()
    report = evaluate_gym("wm_vla/Arm-v0", "touch the blue cube", str(policy_ckpt), str(world_models[1]), episodes=1,
                          ks=(2,), progress=False)
    assert [(r["name"], r["k"], r["episodes"]) for r in report["configs"]] == [("single", 1, 1), ("rank", 2, 1)]


def test_gym_observations_without_lerobot_keys_are_rejected() -> None:
    from wm_vla.eval.gym_eval import gym_obs_batch
    from wm_vla.models.errors import ObservationError

    img = np.zeros((96, 96, 3), np.uint8)
    with pytest.raises(ObservationError, match="agent_pos"):
        gym_obs_batch({"pixels": img}, ("front",), 64, "t")
    with pytest.raises(ObservationError, match="camera 'wrist'"):
        gym_obs_batch({"pixels/front": img, "agent_pos": np.zeros(7)}, ("front", "wrist"), 64, "t")
    with pytest.raises(ObservationError, match="uint8"):
        gym_obs_batch({"pixels": img.astype(np.float32), "agent_pos": np.zeros(7)}, ("front",), 64, "t")
    batch = gym_obs_batch({"pixels": img, "agent_pos": np.zeros(7)}, ("front",), 64, "t")
    assert batch.images.shape == (1, 1, 3, 64, 64)


@pytest.mark.parametrize(("task", "film", "verbs", "policy_demos", "encoder_demos"),
                         [(None, False, {"touch"}, None, 2), ("all", True, {"touch", "push"}, 3, None)])
def test_tiny_pipeline_runs_every_stage_once_and_times_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          task: str | None, film: bool, verbs: set[str],
                                                          policy_demos: int | None, encoder_demos: int | None) -> None:
    from wm_vla.models.checkpoint import check_world_model_encoder
    from wm_vla.training.pipeline import PipelineConfig, default_checkpoints, run_pipeline

    # the FiLM case is the hindsight recipe: policies on the first 3 demos, world models on all 4 and their copies;
    # the first is the shipped recipe: world models in the latent of a FiLM encoder trained on the first 2 demos
    cfg = PipelineConfig(out=tmp_path / "tiny", task=task, film=film, demos=4, perturbed=2, policy_steps=2, wm_steps=3,
                         distill_steps=3, distill_states=4, label_episodes=1, label_k=2, jobs=1, image_size=64,
                         ablation=True, policy_demos=policy_demos, hindsight=film or bool(encoder_demos),
                         wm_encoder_demos=encoder_demos, wm_encoder_steps=1 if encoder_demos else None, progress=False)
    log = run_pipeline(cfg)
    stages = {"collect_demos", "collect_perturbed", "train_policy", "label_candidates", "train_world_model", "distill",
              "train_policy_flare0"}
    encoder_stages = {"collect_wm_encoder_demos", "train_wm_encoder", "label_candidates_wm_encoder"}
    assert set(log["stages"]) == (stages | ({"collect_policy_demos"} if policy_demos else set())
                                  | (encoder_stages if encoder_demos else set()))
    def train_config(name: str) -> dict[str, Any]:
        return dict(json.loads((tmp_path / "tiny" / name / "config.json").read_text())["extra"]["train_config"])

    for name in ("policy", "policy_flare0"):
        assert train_config(name)["dataset"].endswith("arm_expert3" if policy_demos else "arm_expert")
    if policy_demos:
        policy_store = load_frames(tmp_path / "tiny" / "data" / "arm_expert3", 64, progress=False)
        assert policy_store.episode_end.unique().numel() == 3
    assert all(train_config(name)["hindsight_datasets"] == (film or bool(encoder_demos))
               for name in ("wm_teacher", "wm_student"))
    latent_policy = tmp_path / "tiny" / ("wm_encoder" if encoder_demos else "policy")
    for name in ("wm_teacher", "wm_student"):  # trained in that latent, on both policies' labelled candidates
        assert train_config(name)["policy"] == str(latent_policy)
        assert len(train_config(name)["candidates"]) == (2 if encoder_demos else 1)
        check_world_model_encoder(tmp_path / "tiny" / name, latent_policy)
    if encoder_demos:
        assert train_config("wm_encoder")["dataset"].endswith("arm_expert2") and train_config("wm_encoder")["film"]
        assert (train_config("wm_encoder")["steps"], train_config("policy")["steps"]) == (1, 2)  # --wm-encoder-steps
        with pytest.raises(CheckpointError, match="another policy's encoder"):
            check_world_model_encoder(tmp_path / "tiny" / "wm_student", tmp_path / "tiny" / "policy")
    assert log["task"] == (task or "touch")
    assert log["training_seconds"] <= log["total_seconds"]
    policy, student = default_checkpoints(tmp_path / "tiny")
    cfg_main = load_checkpoint(policy, expect="policy")[0].cfg
    assert cfg_main.flare_weight == 0.2 and cfg_main.film == film
    assert {w for w in cfg_main.vocab if w in ("touch", "push", "put")} == verbs  # "all": the 4 demos mix families
    assert load_checkpoint(student, expect="world_model")[0].cfg.role == "student"
    ablation = load_checkpoint(tmp_path / "tiny" / "policy_flare0", expect="policy")[0].cfg
    assert ablation.flare_weight == 0.0 and ablation.film == film
    capsys.readouterr()
    again = run_pipeline(cfg)  # everything done: nothing is redone
    assert again["stages"] == log["stages"] and capsys.readouterr().out.count("already done") == len(log["stages"])


def test_tiny_pipeline_refuses_an_unknown_task_before_writing_anything(tmp_path: Path) -> None:
    from wm_vla.sim.errors import UnknownTaskError
    from wm_vla.training.pipeline import PipelineConfig, run_pipeline

    with pytest.raises(UnknownTaskError, match="unknown task family stack for world 'arm'; families: touch, push"):
        run_pipeline(PipelineConfig(out=tmp_path / "tiny", task="stack", progress=False))
    assert not (tmp_path / "tiny").exists()
    with pytest.raises(TrainingConfigError, match=r"policy_demos must be in 1..demos \(4\), got 5"):
        run_pipeline(PipelineConfig(out=tmp_path / "tiny", demos=4, policy_demos=5, progress=False))
    with pytest.raises(TrainingConfigError, match="wm_encoder_steps must be >= 1, got 0"):
        run_pipeline(PipelineConfig(out=tmp_path / "tiny", wm_encoder_demos=2, wm_encoder_steps=0, progress=False))
    assert not (tmp_path / "tiny").exists()


def test_policy_rollouts_are_recorded_as_a_labelled_lerobot_dataset(policy_ckpt: Path, tmp_path: Path) -> None:
    from wm_vla.data.lerobot_io import load_dataset
    from wm_vla.eval.rollouts import RolloutConfig, record_policy_rollouts

    stats = record_policy_rollouts(RolloutConfig(policy=str(policy_ckpt), out=str(tmp_path / "r"), episodes=2, k=2,
                                                 progress=False))
    ds = load_dataset(tmp_path / "r", delta_timestamps={"action": [0.0, 0.1]})
    assert ds.num_episodes == 2 and sum(stats["events"].values()) == 2
    done = np.asarray(ds.hf_dataset["next.done"]).reshape(-1)
    assert done.sum() == 2 and done[-1]
    assert json.loads((tmp_path / "r" / "rollout_stats.json").read_text())["pick"] == "random"
    with pytest.raises(ValueError, match="--pick"):
        record_policy_rollouts(RolloutConfig(policy=str(policy_ckpt), out=str(tmp_path / "x"), pick="best"))


def _benchmark(name: str):  # type: ignore[no-untyped-def]
    """Import benchmarks/<name>.py (a script folder, not a package)."""
    from script_helpers import load_script

    return load_script(f"benchmarks/{name}.py")


def test_candidate_labels_train_and_distil_the_world_model(policy_ckpt: Path, datasets: dict[str, Path],
                                                          tmp_path: Path) -> None:
    from wm_vla.training.candidate_labels import CandidateLabelConfig, label_candidates, load_candidate_set

    labels = tmp_path / "labels"
    meta = label_candidates(CandidateLabelConfig(policy=str(policy_ckpt), out=str(labels), episodes=2, k=3, jobs=2,
                                                 tasks=("touch",), progress=False))
    policy = load_checkpoint(policy_ckpt, expect="policy")[0]
    pc = policy.cfg
    cands = load_candidate_set(labels, pc.cameras, pc.image_size, pc.horizon, pc.action_dim, pc.state_dim)
    assert len(cands) == meta["decisions"] > 0 and cands.k == 3 and meta["shards"] == 2
    assert cands.images.dtype == torch.uint8 and cands.chunks.shape[1:] == (3, pc.horizon, pc.action_dim)
    assert all(text.startswith("touch the") for text in cands.instructions)
    value = cands.value()
    assert bool(((value >= 0) & (value <= 1)).all()) and bool((value[cands.success.bool()] == 1).all())
    # hindsight: every candidate also judged for the two other colours; touching one cube fails the others' tasks
    assert meta["hindsight"] and cands.relabel_success is not None and cands.relabel_failure is not None
    assert cands.relabel_success.shape == (len(cands), 3, 2) and cands.relabel_instructions is not None
    assert all(len(set(alts) | {text}) == 3 and all(a.startswith("touch the") for a in alts)
               for text, alts in zip(cands.instructions, cands.relabel_instructions))
    assert not bool((cands.success.bool()[..., None] & cands.relabel_success.bool()).any())
    assert bool(cands.relabel_failure.bool()[cands.success.bool()].all())
    copies = cands.hindsight()
    assert len(copies) == 2 and copies[1].instructions[0] == cands.relabel_instructions[0][1]
    assert torch.equal(copies[0].success, cands.relabel_success[..., 0]) and copies[0].images is cands.images
    # the same labels again: same seeds, same policy noise -> bit-identical candidates and outcomes
    again = label_candidates(CandidateLabelConfig(policy=str(policy_ckpt), out=str(tmp_path / "again"), episodes=2, k=3,
                                                  jobs=1, tasks=("touch",), progress=False))
    twin = load_candidate_set(tmp_path / "again", pc.cameras, pc.image_size, pc.horizon, pc.action_dim, pc.state_dim)
    assert again["decisions"] == meta["decisions"]
    order = lambda c: torch.argsort(c.state[:, 0] * 1e3 + c.chunks[:, 0, 0, 0])  # noqa: E731  (shards interleave seeds)
    assert torch.equal(cands.chunks[order(cands)], twin.chunks[order(twin)])
    followed = label_candidates(CandidateLabelConfig(policy=str(policy_ckpt), out=str(tmp_path / "followed"), episodes=1,
                                                     k=2, follow=2, tasks=("touch",), hindsight=False, progress=False))
    assert followed["follow_decisions"] == 2 and followed["decisions"] > 0 and not followed["hindsight"]
    plain_set = load_candidate_set(tmp_path / "followed", pc.cameras, pc.image_size, pc.horizon, pc.action_dim, pc.state_dim)
    assert plain_set.relabel_success is None and plain_set.hindsight() == []  # folders without hindsight still load
    # the grounding probe trains its two rankers on the hindsight labels; a folder without them is refused
    probe = _benchmark("latent_grounding_probe")
    assert probe.main(["--policy", str(policy_ckpt), "--candidates", str(labels), "--steps", "3",
                       "--out", str(tmp_path / "probe.json")]) == 0
    figures = json.loads((tmp_path / "probe.json").read_text())["top1_best_true_outcome"]
    assert set(figures) == {"first_sample", "blind", "pooled", "pooled+colour", "tokens"}
    assert all(0.0 <= r[key] <= 1.0 for r in figures.values() for key in ("own_instruction", "relabelled"))
    with pytest.raises(SystemExit, match="no hindsight labels"):
        probe.main(["--policy", str(policy_ckpt), "--candidates", str(tmp_path / "followed")])
    from wm_vla.training.candidate_labels import concat_candidate_sets

    with pytest.raises(DatasetFeatureError, match="different K"):
        concat_candidate_sets([cands, plain_set])  # K=3 and K=2
    import dataclasses

    without = dataclasses.replace(cands, relabel_success=None, relabel_failure=None, relabel_progress=None,
                                  relabel_instructions=None)
    both = concat_candidate_sets([cands, without])  # one folder without hindsight: the joined set has none
    assert len(both) == 2 * len(cands) and both.relabel_success is None and both.hindsight() == []
    twice = concat_candidate_sets([cands, cands])
    assert twice.relabel_success is not None and twice.relabel_success.shape[0] == 2 * len(cands)
    assert twice.relabel_instructions == cands.relabel_instructions * 2
    # the candidates the deployed stack ranks at fewer Euler steps: same seed and noise, other chunks
    few = label_candidates(CandidateLabelConfig(policy=str(policy_ckpt), out=str(tmp_path / "few"), episodes=1, k=3,
                                                denoise_steps=2, tasks=("touch",), progress=False))
    few_set = load_candidate_set(tmp_path / "few", pc.cameras, pc.image_size, pc.horizon, pc.action_dim, pc.state_dim)
    assert few["denoise_steps"] == 2 and meta["denoise_steps"] == pc.denoise_steps
    assert torch.equal(few_set.state[0], twin.state[0])  # seed 30000's first decision in both (one shard, seed order)
    assert not torch.allclose(few_set.chunks[0], twin.chunks[0], atol=1e-3)
    data = [str(datasets["demos"])]
    teacher = train_world_model(WorldModelTrainConfig(datasets=data, candidates=[str(labels)], policy=str(policy_ckpt),
                                                      out=str(tmp_path / "teacher"), steps=5, batch_size=32, hindsight=True,
                                                      progress=False))
    frames = len(load_frames(datasets["demos"], pc.image_size, pc.cameras, progress=False))
    assert teacher["transitions"] == frames + 3 * 3 * len(cands)  # each decision as labelled + 2 relabelled copies
    assert 0.0 <= teacher["validation"]["top1_true_outcome_heldout_relabelled"] <= 1.0
    outlook = ranking_outlook(teacher["validation"])  # labelled groups -> the pick-vs-first-sample line
    assert outlook is not None and outlook.startswith("held-out decisions: the world model's pick")
    assert "its pick fails in" in outlook and 0.0 <= teacher["validation"]["failure_rate_pick_heldout"] <= 1.0
    # the states a ranked robot visits: the labelling episode executes the world model's pick, decision for decision
    # the states of a ranked episode on the same seed
    ranked = label_candidates(CandidateLabelConfig(policy=str(policy_ckpt), out=str(tmp_path / "ranked"), episodes=4,
                                                   k=3, tasks=("touch",), hindsight=False,
                                                   execute_wm=str(tmp_path / "teacher"), progress=False))
    assert ranked["executed"] == f"world model pick ({tmp_path / 'teacher'})"
    ranked_set = load_candidate_set(tmp_path / "ranked", pc.cameras, pc.image_size, pc.horizon, pc.action_dim,
                                    pc.state_dim)
    world, acting = make_world("arm"), load_policy(str(policy_ckpt))
    visited: list[np.ndarray] = []
    for seed in range(30_000, 30_004):  # the labeller's default seeds, one shard: in seed order
        run_episode(world, acting, "rank", 3, seed, build_ranker(str(tmp_path / "teacher"), acting, world, 0.1),
                    family=("touch",), on_decision=lambda obs, chunks, chosen: visited.append(obs.state))
    world.close()
    assert len(visited) > 4 and torch.equal(ranked_set.state, torch.from_numpy(np.stack(visited)).float())
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "shard-000.json").write_text("{}")  # an earlier labelling run's shard
    with pytest.raises(CheckpointError):  # a policy is not a world model: refused before anything is labelled
        label_candidates(CandidateLabelConfig(policy=str(policy_ckpt), out=str(tmp_path / "kept"), episodes=1, k=3,
                                              tasks=("touch",), execute_wm=str(policy_ckpt), progress=False))
    assert (tmp_path / "kept" / "shard-000.json").read_text() == "{}"
    plain = train_world_model(WorldModelTrainConfig(datasets=data, candidates=[str(labels)], policy=str(policy_ckpt),
                                                    out=str(tmp_path / "plain"), steps=5, batch_size=32, progress=False))
    assert plain["transitions"] == frames + 3 * len(cands)
    sensitivity = _benchmark("wm_instruction_sensitivity")
    assert sensitivity.other_colour("touch the blue cube", 1) == "touch the red cube"
    assert sensitivity.main(["--policy", str(policy_ckpt), "--wm", str(tmp_path / "plain"), "--candidates", str(labels),
                             "--dataset", str(datasets["demos"]), "--out", str(tmp_path / "sens.json")]) == 0
    sens = json.loads((tmp_path / "sens.json").read_text())["wm"][str(tmp_path / "plain")]
    assert sens["dataset"]["frames"] == frames and sens["dataset"]["progress_other_true"] < sens["dataset"]["progress_own_true"]
    assert all(0.0 <= sens[key] <= 1.0 for key in ("same_pick_when_swapped", "best_true_outcome_own_instruction",
                                                   "best_true_outcome_swapped_instruction"))
    assert sens["latent_relative_change"] > 0  # the colour word reaches the latent
    assert "top1_true_outcome_heldout_relabelled" not in plain["validation"]
    student = distill(DistillConfig(datasets=data, candidates=[str(labels)], policy=str(policy_ckpt),
                                    teacher=str(tmp_path / "teacher"), out=str(tmp_path / "student"), steps=5,
                                    batch_size=32, hindsight=True, progress=False))
    assert student["candidates"] == 3 * 3 * len(cands) and 0.0 <= student["top1_agreement_heldout"] <= 1.0
    assert 0.0 <= student["top1_agreement_heldout_relabelled"] <= 1.0
    # extra teacher-labelled states train the student; the held-out states stay the labelled (closed-loop) ones
    extra = distill(DistillConfig(datasets=data, candidates=[str(labels)], policy=str(policy_ckpt), extra_states=4,
                                  teacher=str(tmp_path / "teacher"), out=str(tmp_path / "student_x"), steps=5,
                                  batch_size=32, progress=False))
    assert extra["candidates"] == 3 * (len(cands) + 4) and extra["heldout_states"] == max(1, len(cands) // 10)
    # an ensemble: a second seed on the first one's held-out split; the benchmark reproduces both members' validation
    seed1 = train_world_model(WorldModelTrainConfig(datasets=data, candidates=[str(labels)], policy=str(policy_ckpt),
                                                    out=str(tmp_path / "plain_s1"), steps=5, batch_size=32, seed=1,
                                                    split_seed=0, progress=False))
    members = [str(tmp_path / "plain"), str(tmp_path / "plain_s1")]
    ensemble = _benchmark("wm_ensemble")
    assert ensemble.main(["--policy", str(policy_ckpt), "--dataset", data[0], "--candidates", str(labels),
                          "--wm", members[0], "--wm", members[1], "--out", str(tmp_path / "ens.json")]) == 0
    ens = json.loads((tmp_path / "ens.json").read_text())
    assert ens["best_true_outcome"][members[0]] == plain["validation"]["top1_true_outcome_heldout"]
    assert ens["best_true_outcome"][members[1]] == seed1["validation"]["top1_true_outcome_heldout"]
    assert ens["best_true_outcome"]["first_sample"] == plain["validation"]["top1_true_outcome_first_candidate"]
    assert ens["heldout_decisions"] == max(1, int(len(cands) * 0.1)) and 0.0 <= ens["best_true_outcome"]["ensemble"] <= 1.0
    assert set(ens["same_pick_pairs"]) == {" | ".join(members)}
    from_both = distill(DistillConfig(datasets=data, candidates=[str(labels)], policy=str(policy_ckpt), teacher=members,
                                      out=str(tmp_path / "student_ens"), steps=5, batch_size=32, progress=False))
    assert 0.0 <= from_both["top1_agreement_heldout"] <= 1.0
    assert load_checkpoint(tmp_path / "student_ens", expect="world_model")[1]["teacher"] == members


def test_bad_candidate_label_folders_fail_with_typed_errors(policy_ckpt: Path, tmp_path: Path) -> None:
    from wm_vla.training.candidate_labels import CandidateLabelConfig, label_candidates, load_candidate_set

    pc = load_checkpoint(policy_ckpt, expect="policy")[0].cfg
    args = (pc.cameras, pc.image_size, pc.horizon, pc.action_dim, pc.state_dim)
    with pytest.raises(DatasetFeatureError, match="no meta.json"):
        load_candidate_set(tmp_path, *args)
    labels = tmp_path / "labels"
    label_candidates(CandidateLabelConfig(policy=str(policy_ckpt), out=str(labels), episodes=1, k=2, progress=False))
    with pytest.raises(DatasetFeatureError, match="image_size is"):
        load_candidate_set(labels, pc.cameras, pc.image_size + 32, pc.horizon, pc.action_dim, pc.state_dim)
    shard, side = labels / "shard-000.safetensors", labels / "shard-000.json"
    tensors, sidecar = load_file(str(shard)), json.loads(side.read_text())
    save_file({k: v for k, v in tensors.items() if k != "relabel_failure"}, str(shard))
    with pytest.raises(DatasetFeatureError, match="relabel_failure missing"):
        load_candidate_set(labels, *args)
    save_file(tensors, str(shard))
    side.write_text(json.dumps({**sidecar, "relabel_instructions": [alts[:1] for alts in sidecar["relabel_instructions"]]}))
    with pytest.raises(DatasetFeatureError, match="one instruction per relabel"):
        load_candidate_set(labels, *args)
    side.write_text(json.dumps(sidecar))
    assert load_candidate_set(labels, *args).relabel_success is not None
    (labels / "shard-000.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DatasetFeatureError, match="unreadable shard"):
        load_candidate_set(labels, *args)
    (labels / "meta.json").write_text("{broken")
    with pytest.raises(DatasetFeatureError, match="invalid JSON"):
        load_candidate_set(labels, *args)
    with pytest.raises(ValueError, match="--k"):
        label_candidates(CandidateLabelConfig(policy=str(policy_ckpt), out=str(tmp_path / "x"), k=1))
    with pytest.raises(ModelConfigError, match="denoise_steps"):
        label_candidates(CandidateLabelConfig(policy=str(policy_ckpt), out=str(tmp_path / "y"), denoise_steps=0))
    assert not (tmp_path / "y").exists()  # refused before anything is written


def test_eval_draws_only_the_requested_task_families(policy_ckpt: Path, datasets: dict[str, Path]) -> None:
    from wm_vla.sim.errors import UnknownTaskError
    from wm_vla.sim.tasks import parse_instruction

    report = evaluate(EvalConfig(policy=str(policy_ckpt), episodes=2, ks=(), oracle_k=0, tasks=("push",), progress=False))
    assert report["tasks"] == ["push"]
    default = evaluate(EvalConfig(policy=str(policy_ckpt), episodes=1, ks=(), oracle_k=0, progress=False))
    trained_on = {parse_instruction("arm", t).family for t in load_frames(datasets["demos"], 64, None, progress=False).tasks}
    assert set(default["tasks"]) == trained_on  # by default, the families of the policy's training instructions
    followed = evaluate(EvalConfig(policy=str(policy_ckpt), episodes=1, ks=(), oracle_k=2, oracle_follow=1,
                                   tasks=("touch",), progress=False))
    assert followed["oracle_follow"] == 1 and [r["name"] for r in followed["configs"]] == ["single", "oracle"]
    with pytest.raises(UnknownTaskError, match="juggle"):
        evaluate(EvalConfig(policy=str(policy_ckpt), episodes=1, ks=(), oracle_k=0, tasks=("juggle",), progress=False))


def test_ranking_outlook_warns_when_the_world_model_does_not_beat_the_first_sample() -> None:
    """Figures of two real teachers: the shipped arm one (+13 points, ranking helped in closed loop) and the FiLM
    50-demo one (below the first sample, ranking did not help)."""
    helped = ranking_outlook({"top1_true_outcome_heldout": 0.551, "top1_true_outcome_first_candidate": 0.423})
    assert helped is not None and helped.endswith("(+13%)") and "unlikely" not in helped
    flat = ranking_outlook({"top1_true_outcome_heldout": 0.649, "top1_true_outcome_first_candidate": 0.719})
    assert flat is not None and "unlikely to beat the single sample" in flat and "65%" in flat and "72%" in flat
    assert ranking_outlook({"loss": 0.3}) is None  # no labelled candidate groups: nothing to say
    asked = ranking_outlook({"top1_true_outcome_heldout": 0.6, "top1_true_outcome_first_candidate": 0.5,
                             "top1_true_outcome_heldout_relabelled": 0.71, "top1_true_outcome_first_candidate_relabelled": 0.4})
    assert asked is not None and asked.endswith("(+10%); asked for another target: 71% vs first sample 40%")


class _ScoreIsFirstAction(torch.nn.Module):
    """A world model whose ranking is known by construction: progress = the chunk's first action value, no failure."""

    def forward(self, z: torch.Tensor, chunk: torch.Tensor) -> WorldModelOutput:
        return WorldModelOutput(next_latent=z, progress=chunk[:, 0, 0], failure_logit=torch.full((len(z),), -20.0))


def test_pick_failure_rates_say_whether_the_pick_or_the_first_sample_truly_fails() -> None:
    """Two decisions of three candidates: the model picks candidate 1, then 2; both picks truly fail, neither first
    sample does. The outlook line carries both rates."""
    chunk = torch.zeros(6, 2, 1)
    chunk[:, 0, 0] = torch.tensor([0.1, 0.9, 0.5, 0.2, 0.1, 0.8])
    failure = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    data = Transitions(z=torch.zeros(6, 4), chunk=chunk, z_next=torch.zeros(6, 4), failure=failure,
                       progress=torch.zeros(6), has_next=torch.zeros(6))
    rows = torch.tensor([[0, 1, 2], [3, 4, 5]])
    assert pick_failure_rates(_ScoreIsFirstAction(), data, rows) == (1.0, 0.0)
    failure[[1, 5]] = 0.0
    failure[3] = 1.0  # now the second decision's first sample fails and no pick does
    assert pick_failure_rates(_ScoreIsFirstAction(), data, rows) == (0.0, 0.5)
    line = ranking_outlook({"top1_true_outcome_heldout": 0.42, "top1_true_outcome_first_candidate": 0.25,
                            "failure_rate_pick_heldout": 0.31, "failure_rate_first_candidate": 0.12})
    assert line is not None and line.endswith("(+17%); its pick fails in 31%, the first sample in 12%")


def test_distillation_decisions_follow_the_rankers_switch_rule() -> None:
    """`margin_picks` is the ranker's own choice (`score_candidates`, no penalties) on random score groups, near-ties
    to the margin included; the relative loss reads score gains over the first candidate, in margins."""
    gen = torch.Generator().manual_seed(3)
    score = torch.rand(400, 6, generator=gen) * 0.3
    score[::4, 2] = score[::4, 0] + 0.1 + torch.where(torch.arange(100) % 2 == 0, 1e-4, -1e-4)  # at the margin
    picks = margin_picks(score, 0.1)
    zeros = np.zeros((6, 1, 1))
    expected = [score_candidates(s.double().numpy(), np.zeros(6), zeros, None, RankerConfig(switch_margin=0.1)).chosen
                for s in score]
    assert picks.tolist() == expected and 0 < int((picks == 0).sum()) < len(picks)
    assert torch.equal(with_switch_bonus(score, 0.1).argmax(1), picks)  # the decision loss's target is that choice
    assert float(relative_score_loss(score + 5.0, score, 0.1)) == pytest.approx(0.0, abs=1e-9)  # a shift: same rule
    off = score.clone()
    off[:, 1:] += 0.1  # every other candidate one margin higher against the first
    assert float(relative_score_loss(off, score, 0.1)) == pytest.approx(5 / 6, rel=1e-5)


def test_decision_slack_is_how_far_a_decision_is_from_flipping() -> None:
    """A kept first sample's slack is what the best lacks of the margin; a switch's, the lesser of its excess over the
    margin and its lead over the runner-up. Score errors under half of it never change the decision; one just over it
    can."""
    score = torch.tensor([[0.5, 0.55, 0.3], [0.2, 0.5, 0.45], [0.2, 0.33, 0.1]])
    assert decision_slack(score, 0.1).tolist() == pytest.approx([0.05, 0.05, 0.03], abs=1e-6)
    assert margin_picks(score, 0.1).tolist() == [0, 1, 1]
    flipped = score.clone()
    flipped[0, 1] += 0.051  # now beats the first sample by more than the margin
    flipped[1, 2] += 0.051  # now ahead of the switch's pick
    flipped[2, 0] += 0.031  # now the switch's gain is under the margin
    assert margin_picks(flipped, 0.1).tolist() == [1, 2, 0]
    gen = torch.Generator().manual_seed(5)
    groups = torch.rand(500, 16, generator=gen) * 0.4
    slack = decision_slack(groups, 0.1)
    assert bool((slack >= 0).all())
    noise = (torch.rand(groups.shape, generator=gen) * 2 - 1) * 0.49 * slack[:, None]
    assert torch.equal(margin_picks(groups + noise, 0.1), margin_picks(groups, 0.1))
    assert decision_slack(torch.tensor([[0.3]]), 0.1).tolist() == pytest.approx([0.1])  # K=1: always kept


def test_near_ties_count_the_teachers_close_calls_and_score_the_student_on_the_rest() -> None:
    from wm_vla.models.config import WorldModelConfig
    from wm_vla.models.world_model import LatentWorldModel
    from wm_vla.training.train_world_model import NEAR_TIE_SHARE, CandidateGroups

    torch.manual_seed(0)
    cfg = WorldModelConfig(role="student", latent_dim=8, action_dim=2, horizon=3, hidden=16, layers=1)
    teacher, other = LatentWorldModel(cfg).eval(), LatentWorldModel(cfg).eval()
    g, k = 300, 6
    groups = CandidateGroups(torch.randn(g, 8).repeat_interleave(k, 0), torch.randn(g * k, 3, 2) * 3, k,
                             torch.arange(0), torch.arange(g))
    groups.label(teacher)
    assert groups.score is not None
    margin = 0.02
    is_near = decision_slack(groups.score, margin) < NEAR_TIE_SHARE * margin
    itself = groups.near_ties(teacher, groups.held, margin)
    assert itself["near_tie_share"] == pytest.approx(float(is_near.float().mean()))
    assert 0.0 < itself["near_tie_share"] < 1.0 and itself["decision_agreement_clear"] == 1.0
    assert groups.near_ties(other, groups.held, margin)["decision_agreement_clear"] < 1.0
    only_near = groups.near_ties(other, groups.held[is_near], margin)  # no clear decision: no figure, not NaN
    assert only_near == {"near_tie_share": 1.0}


def test_shadow_summary_says_which_way_the_ranker_and_the_teacher_disagreed() -> None:
    from wm_vla.eval.closed_loop import EpisodeOutcome, shadow_summary

    a = EpisodeOutcome(True, "success", shadow_agree=3, shadow_total=5,
                       shadow_misses=[("switched", -0.02), ("other", 0.004)])
    b = EpisodeOutcome(False, "timeout", shadow_agree=4, shadow_total=5, shadow_misses=[("kept", 0.3)])
    summary = shadow_summary([a, b])
    assert summary["teacher_agreement"] == pytest.approx(0.7) and summary["teacher_agreement_decisions"] == 10
    d = summary["teacher_disagreements"]
    assert (d["switched"], d["kept"], d["other"]) == (1, 1, 1) and d["regret_p50"] == pytest.approx(0.004)
    assert (d["regret_below_0.01"], d["regret_below_0.05"]) == (2, 2)
    assert np.isnan(shadow_summary([EpisodeOutcome(True, "", shadow_total=2, shadow_agree=2)])
                    ["teacher_disagreements"]["regret_p50"])
