"""`wm-vla sim collect`: scripted-expert demonstrations (optionally perturbed) into a LeRobotDataset v3."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wm_vla.data.lerobot_io import HINDSIGHT_FILE, LeRobotWriter, frame_features, prepare_output_dir
from wm_vla.eval.stats import wilson
from wm_vla.sim.registry import make_world
from wm_vla.sim.rollout import run_expert_episode
from wm_vla.sim.tasks import WORLD_FAMILIES, sample_task, sibling_tasks
from wm_vla.sim.errors import UnknownTaskError

STATS_FILE = "collect_stats.json"


@dataclass
class CollectConfig:
    """What to collect and where."""

    world: str
    episodes: int
    out: Path
    seed: int = 0
    noise: float = 0.0
    family: str | None = None
    image_size: int = 96
    use_videos: bool = False
    successes_only: bool = False
    overwrite: bool = False
    progress: bool = True
    hindsight: bool = True  # also label every frame for the scene's other instructions (no extra simulation)


def collect(cfg: CollectConfig) -> dict[str, Any]:
    """Run episodes on seeds seed, seed+1, ...; write the dataset and `collect_stats.json`; return the stats."""
    if cfg.episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {cfg.episodes}")
    if not 0.0 <= cfg.noise <= 1.0:
        raise ValueError(f"--noise must be in [0, 1], got {cfg.noise}")
    world = make_world(cfg.world, image_size=cfg.image_size)
    if cfg.family is not None and cfg.family not in WORLD_FAMILIES[cfg.world]:
        raise UnknownTaskError(f"unknown task family {cfg.family!r} for world {cfg.world!r}; "
                               f"families: {', '.join(WORLD_FAMILIES[cfg.world])}")
    out = Path(cfg.out)
    prepare_output_dir(out, cfg.overwrite)
    relabels = len(sibling_tasks(cfg.world, sample_task(cfg.world, np.random.default_rng(0)))) if cfg.hindsight else 0
    features = frame_features(world.camera_names, cfg.image_size, world.state_names, world.action_names, cfg.use_videos,
                              relabels)
    writer = LeRobotWriter(out, f"wm_vla/{cfg.world}_{'noisy' if cfg.noise else 'expert'}", world.fps, features,
                           robot_type=world.profile.name, use_videos=cfg.use_videos, overwrite=cfg.overwrite)
    records, events = [], Counter()
    relabel_instructions: dict[str, list[str]] = {}
    sim_s = write_s = 0.0
    bar = tqdm(range(cfg.seed, cfg.seed + cfg.episodes), desc=f"collect {cfg.world}", unit="ep", disable=not cfg.progress)
    for seed in bar:
        t0 = time.perf_counter()
        rec = run_expert_episode(world, seed, noise=cfg.noise, family=cfg.family, hindsight=cfg.hindsight)
        t1 = time.perf_counter()
        if rec.success or not cfg.successes_only:
            writer.write_episode(rec.frames)
            if cfg.hindsight:
                relabel_instructions[rec.instruction] = list(rec.relabel_instructions)
        write_s += time.perf_counter() - t1
        sim_s += t1 - t0
        events[rec.event] += 1
        records.append(rec.summary() | {"written": rec.success or not cfg.successes_only})
        bar.set_postfix(success=f"{sum(r['success'] for r in records)}/{len(records)}")
    t2 = time.perf_counter()
    writer.finalize()
    write_s += time.perf_counter() - t2
    world.close()
    frames = sum(r["frames"] for r in records if r["written"])
    by_family: dict[str, list[bool]] = {}
    for r in records:
        by_family.setdefault(r["instruction"].split()[0], []).append(r["success"])
    stats = {
        "world": cfg.world, "out": str(out), "episodes": cfg.episodes, "episodes_written": writer.episodes,
        "frames_written": frames, "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1], "noise": cfg.noise,
        "success": wilson(sum(r["success"] for r in records), len(records)).to_dict(),
        "success_by_instruction_verb": {k: wilson(sum(v), len(v)).to_dict() for k, v in by_family.items()},
        "events": dict(events), "sim_seconds": round(sim_s, 2), "write_seconds": round(write_s, 2),
        "frames_per_second": round(frames / max(sim_s + write_s, 1e-9), 1), "episodes_detail": records,
    }
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2))
    if cfg.hindsight:
        (out / HINDSIGHT_FILE).write_text(json.dumps({"relabels": relabels, "instructions": relabel_instructions},
                                                     indent=1))
    return stats
