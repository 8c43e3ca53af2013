"""`wm-vla sim label-candidates`: the policy's own candidate chunks with their TRUE short-horizon outcomes.

A world model that ranks the policy's candidates must learn what separates them. Demonstrations show one
(good) chunk per state; perturbed rollouts show failures but not the policy's alternatives. Here the policy
runs closed-loop (executing a random one of its K candidates, for diverse states; or, with `execute_wm`, a world
model's pick, for the states a ranked robot visits); at every decision all K
candidates are rolled out in a copy of the simulator state and labelled: success / failure within the
executed part, and the world's task progress after it. With `follow` N, each candidate is continued by the
single-sample policy for N more decisions before it is judged, so consequences that come later (a collision on
the way round an obstacle) count.

Stored as shards of safetensors tensors (+ `meta.json` with instructions and provenance); never pickles:

    images   (N, cameras, 3, S, S) uint8  the decision's observation, at the policy's input size
    state    (N, state_dim)        float32
    chunks   (N, K, H, A)          float32 candidate action chunks (robot units)
    success / failure (N, K) uint8, progress (N, K) float32

With hindsight relabelling (the default), each candidate's executed part is also judged as if each of the
scene's other instructions had been asked ("touch the blue cube" when the task was the red one), at no extra
simulation cost. The copies show what the instruction changes (`wm-vla train world-model --hindsight`,
`benchmarks/latent_grounding_probe.py`):

    relabel_success / relabel_failure (N, K, A) uint8, relabel_progress (N, K, A) float32
    + `relabel_instructions` (N lists of A strings) in the shard's JSON
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from wm_vla.eval.closed_loop import (
    build_ranker,
    candidate_outcomes,
    eval_tasks_for,
    load_policy,
    policy_follower,
    run_episode,
)
from wm_vla.eval.stats import wilson
from wm_vla.models.checkpoint import check_world_model_encoder
from wm_vla.models.preprocess import resize_uint8
from wm_vla.pickle_guard import pickle_kind, refusal
from wm_vla.runtime.ranker import DEFAULT_SWITCH_MARGIN
from wm_vla.sim.registry import make_world
from wm_vla.sim.tasks import sibling_tasks
from wm_vla.sim.world import Observation
from wm_vla.training.errors import DatasetFeatureError

KEYS = ("images", "state", "chunks", "success", "failure", "progress")
RELABEL_KEYS = ("relabel_success", "relabel_failure", "relabel_progress")


@dataclass
class CandidateLabelConfig:
    policy: str
    out: str
    world: str = "arm"
    episodes: int = 200
    seed: int = 30_000
    k: int = 8
    follow: int = 0          # continue each candidate with the single-sample policy for N more decisions
    denoise_steps: int | None = None  # Euler steps per sample (None: the policy's own), as the deployed stack runs
    hindsight: bool = True   # also label every candidate for the scene's other instructions (no extra rollouts)
    tasks: tuple[str, ...] | None = None
    jobs: int = 1
    progress: bool = True
    # execute this world model's pick instead of a random candidate: label the states a ranked robot visits
    execute_wm: str | None = None
    wm_encoder: str | None = None   # the policy whose latent `execute_wm` ranks in (None: the labelled policy's)
    switch_margin: float = DEFAULT_SWITCH_MARGIN


@dataclass
class CandidateSet:
    """All labelled decisions of one or more label folders (see module docstring for shapes)."""

    images: torch.Tensor
    state: torch.Tensor
    chunks: torch.Tensor
    success: torch.Tensor
    failure: torch.Tensor
    progress: torch.Tensor
    instructions: list[str]
    cameras: tuple[str, ...]
    relabel_success: torch.Tensor | None = None    # (N, K, A) hindsight labels, if the folder has them
    relabel_failure: torch.Tensor | None = None
    relabel_progress: torch.Tensor | None = None
    relabel_instructions: list[list[str]] | None = None

    def __len__(self) -> int:
        return int(self.state.shape[0])

    @property
    def k(self) -> int:
        return int(self.chunks.shape[1])

    def value(self) -> torch.Tensor:
        """Training target of the progress head: 1 on success, else the task progress after the chunk."""
        return torch.where(self.success.bool(), torch.ones_like(self.progress), self.progress)

    def hindsight(self) -> list[CandidateSet]:
        """One copy per relabelled instruction: the same images and chunks, the other instruction and its labels."""
        if self.relabel_instructions is None or self.relabel_success is None or self.relabel_failure is None \
                or self.relabel_progress is None:
            return []
        return [CandidateSet(self.images, self.state, self.chunks, self.relabel_success[..., a],
                             self.relabel_failure[..., a], self.relabel_progress[..., a],
                             [alts[a] for alts in self.relabel_instructions], self.cameras)
                for a in range(int(self.relabel_success.shape[2]))]


def _label_shard(cfg: CandidateLabelConfig, seeds: list[int], shard: int, threads: int | None) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    policy = load_policy(cfg.policy, denoise_steps=cfg.denoise_steps)
    world = make_world(cfg.world)
    tasks = eval_tasks_for(cfg.world, cfg.tasks, policy)
    pc = policy.cfg
    rows: dict[str, list[np.ndarray]] = {k: [] for k in KEYS + (RELABEL_KEYS if cfg.hindsight else ())}
    instructions: list[str] = []
    relabel_instructions: list[list[str]] = []

    follower = policy_follower(policy, cfg.seed) if cfg.follow > 0 else None

    def on_decision(obs: Observation, chunks: np.ndarray, chosen: int) -> None:
        relabel = sibling_tasks(cfg.world, world.task) if cfg.hindsight else ()
        labels = candidate_outcomes(world, chunks, pc.exec_horizon, follower, cfg.follow, relabel)
        imgs = torch.stack([torch.from_numpy(obs.images[c]).permute(2, 0, 1) for c in pc.cameras])
        rows["images"].append(resize_uint8(imgs, pc.image_size).numpy())
        rows["state"].append(obs.state.astype(np.float32))
        rows["chunks"].append(chunks.astype(np.float32))
        rows["success"].append(labels.success.astype(np.uint8))
        rows["failure"].append(labels.failure.astype(np.uint8))
        rows["progress"].append(labels.progress.astype(np.float32))
        instructions.append(obs.instruction)
        if cfg.hindsight:
            rows["relabel_success"].append(labels.relabel_success.astype(np.uint8))
            rows["relabel_failure"].append(labels.relabel_failure.astype(np.uint8))
            rows["relabel_progress"].append(labels.relabel_progress.astype(np.float32))
            relabel_instructions.append([t.instruction for t in relabel])

    encoder = load_policy(cfg.wm_encoder) if cfg.execute_wm and cfg.wm_encoder else None
    ranker = build_ranker(cfg.execute_wm, encoder or policy, world, cfg.switch_margin) if cfg.execute_wm else None
    mode = "rank" if ranker is not None else "random"
    episodes = []
    for seed in tqdm(seeds, desc=f"label candidates (shard {shard})", unit="ep", disable=not cfg.progress):
        outcome = run_episode(world, policy, mode, cfg.k, seed, ranker, family=tasks, on_decision=on_decision,
                              wm_encoder=encoder)
        episodes.append({"seed": seed, "success": outcome.success, "event": outcome.event})
    world.close()
    out = Path(cfg.out)
    save_file({k: torch.from_numpy(np.stack(v)) for k, v in rows.items()}, str(out / f"shard-{shard:03d}.safetensors"))
    side: dict[str, Any] = {"instructions": instructions, "episodes": episodes}
    if cfg.hindsight:
        side["relabel_instructions"] = relabel_instructions
    (out / f"shard-{shard:03d}.json").write_text(json.dumps(side))
    return {"decisions": len(instructions), "episodes": episodes}


def label_candidates(cfg: CandidateLabelConfig) -> dict[str, Any]:
    """Run the labeller (optionally in `jobs` processes over disjoint seeds); returns and writes `meta.json`."""
    if cfg.episodes <= 0 or cfg.k < 2:
        raise ValueError("--episodes must be positive and --k at least 2")
    policy = load_policy(cfg.policy, denoise_steps=cfg.denoise_steps)  # fails early on a bad checkpoint or steps
    if cfg.execute_wm:  # fail early too, before any shard is touched: a missing or bad world model or encoder, or
        # a world model trained in another policy's latent than the one it would be given
        check_world_model_encoder(cfg.execute_wm, cfg.wm_encoder or cfg.policy)
        encoder = load_policy(cfg.wm_encoder) if cfg.wm_encoder else None
        check_world = make_world(cfg.world)
        try:
            build_ranker(cfg.execute_wm, encoder or policy, check_world, cfg.switch_margin)
        finally:
            check_world.close()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*"):
        old.unlink()
    seeds = list(range(cfg.seed, cfg.seed + cfg.episodes))
    jobs = max(1, min(cfg.jobs, len(seeds)))
    parts = [seeds[i::jobs] for i in range(jobs)]
    if jobs == 1:
        results = [_label_shard(cfg, parts[0], 0, None)]
    else:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        quiet = CandidateLabelConfig(**{**asdict(cfg), "progress": False})
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_label_shard, quiet, part, i, 1) for i, part in enumerate(parts)]
            results = [f.result() for f in tqdm(futures, desc="label candidates", unit="shard", disable=not cfg.progress)]
    episodes = [e for r in results for e in r["episodes"]]
    meta = {"format": "wm_vla.candidate_labels/1", "policy": cfg.policy, "world": cfg.world, "k": cfg.k,
            "cameras": list(policy.cfg.cameras), "image_size": policy.cfg.image_size,
            "horizon": policy.cfg.horizon, "action_dim": policy.cfg.action_dim, "state_dim": policy.cfg.state_dim,
            "exec_horizon": policy.cfg.exec_horizon, "denoise_steps": policy.cfg.denoise_steps,
            "follow_decisions": cfg.follow, "hindsight": cfg.hindsight, "seeds": [seeds[0], seeds[-1]], "shards": jobs,
            "executed": f"world model pick ({cfg.execute_wm})" if cfg.execute_wm else "random candidate",
            "decisions": sum(r["decisions"] for r in results),
            "episode_success": wilson(sum(e["success"] for e in episodes), len(episodes)).to_dict()}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def concat_candidate_sets(sets: list[CandidateSet]) -> CandidateSet:
    """Several label folders as one set (same K and cameras); hindsight labels kept only if every set has them."""
    if not sets:
        raise DatasetFeatureError("no candidate sets to join")
    if len({(c.k, c.cameras) for c in sets}) != 1:
        raise DatasetFeatureError("candidate sets with different K or cameras cannot be joined: "
                                  + ", ".join(f"K={c.k} {c.cameras}" for c in sets))
    joined = CandidateSet(*(torch.cat([getattr(c, key) for c in sets]) for key in KEYS),
                          [t for c in sets for t in c.instructions], sets[0].cameras)
    relabels = [c for c in sets if c.relabel_success is not None and c.relabel_instructions is not None]
    if len(relabels) == len(sets) and len({int(c.relabel_success.shape[2]) for c in relabels}) == 1:  # type: ignore[union-attr]
        for key in RELABEL_KEYS:
            setattr(joined, key, torch.cat([getattr(c, key) for c in sets]))
        joined.relabel_instructions = [alts for c in relabels for alts in c.relabel_instructions]  # type: ignore[union-attr]
    return joined


def load_candidate_set(path: str | os.PathLike[str], cameras: tuple[str, ...], image_size: int, horizon: int,
                       action_dim: int, state_dim: int) -> CandidateSet:
    """Load a label folder, checking it against the policy that will encode it; bad folders raise typed errors."""
    root = Path(path)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise DatasetFeatureError(f"{root}: not a candidate-label folder (no meta.json); create one with "
                                  "`wm-vla sim label-candidates`")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetFeatureError(f"{meta_path}: invalid JSON ({exc})") from exc
    if meta.get("format") != "wm_vla.candidate_labels/1":
        raise DatasetFeatureError(f"{meta_path}: unknown format {meta.get('format')!r}")
    want = {"cameras": list(cameras), "image_size": image_size, "horizon": horizon, "action_dim": action_dim,
            "state_dim": state_dim}
    bad = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
    if bad:
        raise DatasetFeatureError(f"{root}: labels do not match the policy: " +
                                  ", ".join(f"{k} is {got} (policy: {exp})" for k, (got, exp) in bad.items()))
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in KEYS + RELABEL_KEYS}
    instructions: list[str] = []
    relabel_instructions: list[list[str]] = []
    for i in range(int(meta.get("shards", 0))):
        shard = root / f"shard-{i:03d}.safetensors"
        kind = pickle_kind(shard)
        if kind:
            raise DatasetFeatureError(refusal(shard, kind, "a safetensors shard"))
        try:
            tensors = load_file(str(shard))
            side = json.loads(shard.with_suffix(".json").read_text())
        except (OSError, SafetensorError, json.JSONDecodeError) as exc:
            raise DatasetFeatureError(f"{shard}: unreadable shard ({exc})") from exc
        missing = [k for k in KEYS if k not in tensors]
        if missing:
            raise DatasetFeatureError(f"{shard}: missing tensors {', '.join(missing)}")
        n = tensors["state"].shape[0]
        if any(tensors[k].shape[0] != n for k in KEYS) or len(side["instructions"]) != n:
            raise DatasetFeatureError(f"{shard}: tensors and instructions disagree on the number of decisions")
        for k in KEYS:
            parts[k].append(tensors[k])
        instructions += side["instructions"]
        if meta.get("hindsight"):
            _check_relabels(shard, tensors, side, n, tensors["success"].shape[1])
            for k in RELABEL_KEYS:
                parts[k].append(tensors[k])
            relabel_instructions += side["relabel_instructions"]
    if not instructions:
        raise DatasetFeatureError(f"{root}: no labelled decisions")
    cat = {k: torch.cat(parts[k]) for k in KEYS}
    if cat["chunks"].shape[2:] != (horizon, action_dim) or cat["images"].shape[1:] != (len(cameras), 3, image_size, image_size):
        raise DatasetFeatureError(f"{root}: tensor shapes {tuple(cat['chunks'].shape)} / {tuple(cat['images'].shape)} "
                                  "do not match meta.json")
    cands = CandidateSet(cat["images"], cat["state"].float(), cat["chunks"].float(), cat["success"], cat["failure"],
                         cat["progress"].float(), instructions, tuple(cameras))
    if meta.get("hindsight"):
        try:
            relabels = {k: torch.cat(parts[k]) for k in RELABEL_KEYS}
        except RuntimeError as exc:
            raise DatasetFeatureError(f"{root}: shards disagree on the number of relabelled instructions ({exc})") from exc
        cands.relabel_success, cands.relabel_failure = relabels["relabel_success"], relabels["relabel_failure"]
        cands.relabel_progress = relabels["relabel_progress"].float()
        cands.relabel_instructions = relabel_instructions
    return cands


def _check_relabels(shard: Path, tensors: dict[str, torch.Tensor], side: dict[str, Any], n: int, k: int) -> None:
    """A hindsight shard must hold (N, K, A) labels and N lists of A instructions."""
    missing = [key for key in RELABEL_KEYS if key not in tensors] + (
        [] if "relabel_instructions" in side else ["relabel_instructions (JSON)"])
    if missing:
        raise DatasetFeatureError(f"{shard}: meta.json says hindsight but {', '.join(missing)} missing")
    a = tensors["relabel_success"].shape[2] if tensors["relabel_success"].dim() == 3 else -1
    if any(tuple(tensors[key].shape) != (n, k, a) for key in RELABEL_KEYS) or len(side["relabel_instructions"]) != n \
            or any(len(alts) != a for alts in side["relabel_instructions"]):
        raise DatasetFeatureError(f"{shard}: hindsight labels must be (decisions, K, relabels) with one instruction "
                                  f"per relabel, got {', '.join(str(tuple(tensors[key].shape)) for key in RELABEL_KEYS)}")
