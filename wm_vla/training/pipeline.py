"""`wm-vla train tiny`: the whole CPU pipeline in one command, each stage timed (and skipped when already done).

collect demos -> collect perturbed rollouts -> policy (FLARE) -> label the policy's candidates (sim-copy rollouts)
-> teacher world model -> distilled student [-> FLARE ablation policy (lambda = 0)]. The default checkpoints of
`wm-vla eval sim`, the ROS stack and
the demo are the shipped copies of its output (`wm-vla models ship`, `make models`).

The benchmark task of the arm world is `touch` (reach the named cube around the post without touching the
others): with the data and compute of a 2-core CPU, the tiny policy succeeds on it often enough (not always)
for ranking to matter; push and place stay available to every command through `--task`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wm_vla.sim.collect import CollectConfig, collect
from wm_vla.sim.tasks import check_families
from wm_vla.training.candidate_labels import CandidateLabelConfig, label_candidates
from wm_vla.training.errors import TrainingConfigError
from wm_vla.training.train_policy import PolicyTrainConfig, train_policy
from wm_vla.training.train_world_model import (
    DistillConfig,
    WorldModelTrainConfig,
    distill,
    ranking_outlook,
    train_world_model,
)

DEFAULT_DIR = Path("outputs/tiny")
POLICY, TEACHER, STUDENT, ABLATION, WM_ENCODER = "policy", "wm_teacher", "wm_student", "policy_flare0", "wm_encoder"
BENCHMARK_TASKS = {"arm": "touch", "quadruped": "goto"}
ALL_TASKS = "all"  # `task` value: every family of the world


@dataclass
class PipelineConfig:
    out: Path = DEFAULT_DIR
    world: str = "arm"
    task: str | None = None   # task family, or "all"; None: the world's benchmark task (BENCHMARK_TASKS)
    demos: int = 400
    perturbed: int = 200
    noise: float = 0.5
    label_episodes: int = 120
    label_k: int = 8
    label_follow: int = 2   # judge each candidate after 2 more policy decisions (8-step labels are myopic)
    jobs: int = 2
    policy_steps: int = 3000
    wm_steps: int = 3000
    distill_steps: int = 3000
    distill_states: int = 1500
    image_size: int = 96
    seed: int = 0           # training seed of the policy, teacher and student (the data's seeds are fixed)
    ablation: bool = False
    film: bool = False      # the policies' CNN is conditioned on the instruction (FiLM)
    # the policies learn from only the first N demonstrations (a teleop session's worth); the world models still
    # see all `demos` (None: the policies see all of them too)
    policy_demos: int | None = None
    # teacher and student also train on every recorded frame relabelled for the scene's other instructions, with
    # a listwise loss across them (needs a latent that carries the instruction, e.g. --film; docs/results.md, issue #3)
    hindsight: bool = False
    # the world models rank in the latent of a second, FiLM policy trained on the first N demonstrations (`wm_encoder`:
    # its encoder reads the instruction, which the policy's may not); they learn from both policies' labelled candidates
    wm_encoder_demos: int | None = None
    wm_encoder_steps: int | None = None   # training steps of that encoder (None: policy_steps)
    progress: bool = True


def default_checkpoints(root: Path | None = None, world: str = "arm") -> tuple[Path, Path]:
    """(policy, student world model): the shipped `tiny` checkpoints of `world`, or those of a `wm-vla train tiny`
    output folder `root`."""
    if root is None:
        from wm_vla.models.release import SHIPPED_DIRS
        if world not in SHIPPED_DIRS:
            raise ValueError(f"no shipped checkpoints for world {world!r}; choose from {sorted(SHIPPED_DIRS)}")
        return SHIPPED_DIRS[world] / POLICY, SHIPPED_DIRS[world] / STUDENT
    return Path(root) / POLICY, Path(root) / STUDENT


NO_ENCODER = "none"  # `wm_encoder` value: rank in the acting policy's own latent, even with the shipped models


def default_wm_encoder(world: str = "arm") -> Path | None:
    """The shipped world models' encoder policy (`wm_encoder` in the shipped folder), None when the shipped world
    models rank in the shipped policy's own latent."""
    from wm_vla.models.release import SHIPPED_DIRS

    path = SHIPPED_DIRS.get(world, Path("/nonexistent")) / WM_ENCODER
    return path if (path / "config.json").is_file() else None


def is_shipped(checkpoint: str | Path | list[str] | None, world: str = "arm") -> bool:
    """True when `checkpoint` is empty (the default) or one of the shipped checkpoints of `world`."""
    from wm_vla.models.release import SHIPPED_DIRS

    if not checkpoint:
        return True
    if isinstance(checkpoint, list):
        return all(is_shipped(c, world) for c in checkpoint)
    root = SHIPPED_DIRS.get(world)
    return root is not None and Path(checkpoint).resolve().parent == root.resolve()


def resolve_wm_encoder(value: str | None, shipped_models: bool, world: str = "arm") -> str | None:
    """The encoder policy a world model ranks in: `value` when given ("none": the acting policy's own latent), else
    the shipped one when the shipped world model (or, for vla_node, the shipped policy) is in use, else None."""
    if value == NO_ENCODER:
        return None
    if value:
        return str(value)
    default = default_wm_encoder(world) if shipped_models else None
    return str(default) if default is not None else None


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    task = cfg.task or BENCHMARK_TASKS[cfg.world]
    family = None if task == ALL_TASKS else task  # collect draws from every family with None
    tasks = check_families(cfg.world, family)
    for name in ("policy_demos", "wm_encoder_demos"):
        n = getattr(cfg, name)
        if n is not None and not 0 < n <= cfg.demos:
            raise TrainingConfigError(f"{name} must be in 1..demos ({cfg.demos}), got {n}")
    if cfg.wm_encoder_steps is not None and cfg.wm_encoder_steps < 1:
        raise TrainingConfigError(f"wm_encoder_steps must be >= 1, got {cfg.wm_encoder_steps}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "pipeline.json"
    log: dict[str, Any] = json.loads(log_path.read_text()) if log_path.is_file() else {"stages": {}}
    log["task"] = task
    demos, perturbed = out / "data" / f"{cfg.world}_expert", out / "data" / f"{cfg.world}_perturbed"
    labels = out / "data" / f"{cfg.world}_candidates"
    data = [str(demos), str(perturbed)]

    def first_demos(n: int | None) -> Path:
        return demos if n is None else out / "data" / f"{cfg.world}_expert{n}"

    policy_data, encoder_data = first_demos(cfg.policy_demos), first_demos(cfg.wm_encoder_demos)
    latent_policy = out / (WM_ENCODER if cfg.wm_encoder_demos is not None else POLICY)
    encoder_labels = out / "data" / f"{cfg.world}_candidates_{WM_ENCODER}"
    candidates = [str(labels)] + ([str(encoder_labels)] if cfg.wm_encoder_demos is not None else [])

    def stage(name: str, done: Path, fn: Callable[[], Any]) -> None:
        if done.exists():
            print(f"[train tiny] {name}: already done ({done})")
            return
        print(f"[train tiny] {name} ...")
        t0 = time.perf_counter()
        fn()
        log["stages"][name] = round(time.perf_counter() - t0, 1)
        log_path.write_text(json.dumps(log, indent=2))

    stage("collect_demos", demos / "collect_stats.json", lambda: collect(CollectConfig(
        world=cfg.world, episodes=cfg.demos, out=demos, family=family, image_size=cfg.image_size, progress=cfg.progress,
        overwrite=True)))
    stage("collect_perturbed", perturbed / "collect_stats.json", lambda: collect(CollectConfig(
        world=cfg.world, episodes=cfg.perturbed, out=perturbed, seed=5000, noise=cfg.noise, family=family,
        image_size=cfg.image_size, progress=cfg.progress, overwrite=True)))
    for name, n, path in (("collect_policy_demos", cfg.policy_demos, policy_data),
                          ("collect_wm_encoder_demos", cfg.wm_encoder_demos, encoder_data)):
        if n is not None:  # the same seeds as the first n demonstrations
            stage(name, path / "collect_stats.json", lambda n=n, path=path: collect(CollectConfig(
                world=cfg.world, episodes=int(n), out=path, family=family, image_size=cfg.image_size,
                progress=cfg.progress, overwrite=True)))
    stage("train_policy", out / POLICY / "train_log.json", lambda: train_policy(PolicyTrainConfig(
        dataset=str(policy_data), out=str(out / POLICY), steps=cfg.policy_steps, seed=cfg.seed, film=cfg.film,
        progress=cfg.progress)))
    stage("label_candidates", labels / "meta.json", lambda: label_candidates(CandidateLabelConfig(
        policy=str(out / POLICY), out=str(labels), world=cfg.world, episodes=cfg.label_episodes, k=cfg.label_k,
        tasks=tasks, jobs=cfg.jobs, follow=cfg.label_follow, progress=cfg.progress)))
    if cfg.wm_encoder_demos is not None:
        stage("train_wm_encoder", out / WM_ENCODER / "train_log.json", lambda: train_policy(PolicyTrainConfig(
            dataset=str(encoder_data), out=str(out / WM_ENCODER), steps=cfg.wm_encoder_steps or cfg.policy_steps,
            seed=cfg.seed, film=True,
            progress=cfg.progress)))
        stage("label_candidates_wm_encoder", encoder_labels / "meta.json", lambda: label_candidates(
            CandidateLabelConfig(policy=str(out / WM_ENCODER), out=str(encoder_labels), world=cfg.world,
                                 episodes=cfg.label_episodes, k=cfg.label_k, tasks=tasks, jobs=cfg.jobs,
                                 follow=cfg.label_follow, progress=cfg.progress)))
    stage("train_world_model", out / TEACHER / "train_log.json", lambda: train_world_model(WorldModelTrainConfig(
        datasets=data, candidates=candidates, policy=str(latent_policy), out=str(out / TEACHER), steps=cfg.wm_steps,
        seed=cfg.seed, hindsight_datasets=cfg.hindsight, progress=cfg.progress)))
    stage("distill", out / STUDENT / "train_log.json", lambda: distill(DistillConfig(
        datasets=data, candidates=candidates, policy=str(latent_policy), teacher=str(out / TEACHER),
        out=str(out / STUDENT), steps=cfg.distill_steps, states=cfg.distill_states, seed=cfg.seed,
        hindsight_datasets=cfg.hindsight, progress=cfg.progress)))
    teacher_log = out / TEACHER / "train_log.json"
    if teacher_log.is_file():
        log["ranking_outlook"] = ranking_outlook(json.loads(teacher_log.read_text()).get("validation", {}))
    if cfg.ablation:
        stage("train_policy_flare0", out / ABLATION / "train_log.json", lambda: train_policy(PolicyTrainConfig(
            dataset=str(policy_data), out=str(out / ABLATION), steps=cfg.policy_steps, flare_weight=0.0, seed=cfg.seed,
            film=cfg.film, progress=cfg.progress)))
    main = ("train_policy", "train_wm_encoder", "train_world_model", "distill")
    log["training_seconds"] = round(sum(log["stages"].get(s, 0.0) for s in main), 1)
    log["total_seconds"] = round(sum(log["stages"].values()), 1)
    log_path.write_text(json.dumps(log, indent=2))
    return log
