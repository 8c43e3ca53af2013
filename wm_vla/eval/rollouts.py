"""`wm-vla sim rollouts`: the policy's own closed-loop episodes, outcome-labelled, as a LeRobotDataset v3.

World models that rank the policy's candidates must see the policy's own chunks and where they lead (not only
expert and perturbed-expert chunks). At each decision one of K sampled candidates is executed: the first
(`--pick first`, the plain policy) or a random one (`--pick random`, more diverse outcomes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wm_vla.data.lerobot_io import LeRobotWriter, frame_features, prepare_output_dir
from wm_vla.eval.closed_loop import load_policy, run_episode
from wm_vla.eval.stats import wilson
from wm_vla.sim.registry import make_world
from wm_vla.sim.rollout import episode_frame
from wm_vla.sim.world import Observation, StepResult

PICKS = ("first", "random")


@dataclass
class RolloutConfig:
    policy: str
    out: str
    world: str = "arm"
    episodes: int = 100
    seed: int = 20_000
    k: int = 4
    pick: str = "random"
    overwrite: bool = False
    progress: bool = True


def record_policy_rollouts(cfg: RolloutConfig) -> dict[str, Any]:
    if cfg.pick not in PICKS:
        raise ValueError(f"--pick must be one of {', '.join(PICKS)}, got {cfg.pick!r}")
    if cfg.episodes <= 0 or cfg.k <= 0:
        raise ValueError("--episodes and --k must be positive")
    policy = load_policy(cfg.policy)
    world = make_world(cfg.world)
    out = Path(cfg.out)
    prepare_output_dir(out, cfg.overwrite)
    writer = LeRobotWriter(out, f"wm_vla/{cfg.world}_policy_rollouts", world.fps,
                           frame_features(world.camera_names, world.config.image_size, world.state_names,
                                          world.action_names, use_videos=False),
                           robot_type=world.profile.name, overwrite=cfg.overwrite)
    outcomes, events = [], {}
    mode = "random" if cfg.pick == "random" else "single"
    for seed in tqdm(range(cfg.seed, cfg.seed + cfg.episodes), desc="policy rollouts", unit="ep", disable=not cfg.progress):
        frames: list[dict[str, Any]] = []

        def record(obs: Observation, action: np.ndarray, result: StepResult) -> None:
            frames.append(episode_frame(obs, world.check_action(action), result.success, result.failure, result.done))

        outcome = run_episode(world, policy, mode, cfg.k, seed, None, on_step=record)
        for frame in frames:
            frame["episode_success"] = np.array([outcome.success])
        writer.write_episode(frames)
        outcomes.append(outcome.success)
        events[outcome.event] = events.get(outcome.event, 0) + 1
    writer.finalize()
    world.close()
    stats = {"policy": cfg.policy, "world": cfg.world, "episodes": cfg.episodes, "k": cfg.k, "pick": cfg.pick,
             "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1], "success": wilson(sum(outcomes), len(outcomes)).to_dict(),
             "events": events}
    (out / "rollout_stats.json").write_text(json.dumps(stats, indent=2))
    return stats
