"""`wm-vla eval gym`: the closed-loop single/rank evaluation on ANY Gymnasium env with LeRobot observation keys.

Observations: `pixels` (one camera, H×W×3 uint8) or `pixels/<camera>` (or a `pixels` dict), and `agent_pos`.
The task string is given (envs rarely carry language). Success = info["is_success"] when present, else reward > 0
at termination.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from wm_vla.eval.closed_loop import EpisodeOutcome, _row, write_eval_report
from wm_vla.models.checkpoint import check_world_model_encoder, load_checkpoint
from wm_vla.models.errors import ObservationError
from wm_vla.models.flare_policy import FlarePolicy, ObsBatch
from wm_vla.models.preprocess import resize_uint8
from wm_vla.models.world_model import LatentWorldModel
from wm_vla.runtime.ranker import GpcRanker


def gym_obs_batch(obs: dict[str, Any], cameras: tuple[str, ...], image_size: int, task: str) -> ObsBatch:
    """LeRobot-keyed Gymnasium observation -> a model batch of one."""
    if not isinstance(obs, dict) or "agent_pos" not in obs:
        raise ObservationError(f"observation needs LeRobot keys 'pixels' and 'agent_pos', got {sorted(obs) if isinstance(obs, dict) else type(obs).__name__}")
    pixels = obs.get("pixels")
    images = []
    for cam in cameras:
        if isinstance(pixels, dict) and cam in pixels:
            img = pixels[cam]
        elif f"pixels/{cam}" in obs:
            img = obs[f"pixels/{cam}"]
        elif isinstance(pixels, np.ndarray) and len(cameras) == 1:
            img = pixels
        else:
            raise ObservationError(f"camera {cam!r} not in the observation (keys: {sorted(obs)})")
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
            raise ObservationError(f"camera {cam!r}: expected H×W×3 uint8, got {img.shape} {img.dtype}")
        images.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
    state = torch.as_tensor(np.asarray(obs["agent_pos"], dtype=np.float32))[None]
    return ObsBatch(resize_uint8(torch.stack(images), image_size)[None].float() / 255.0, state, [task])


def run_gym_episode(env: gym.Env, policy: FlarePolicy, task: str, mode: str, k: int, seed: int,
                    ranker: GpcRanker | None) -> EpisodeOutcome:
    obs, _info = env.reset(seed=seed, options={"task": task})
    gen = torch.Generator().manual_seed(seed)
    outcome = EpisodeOutcome(False, "")
    while True:
        t0 = time.perf_counter()
        sample = policy.sample(gym_obs_batch(obs, policy.cfg.cameras, policy.cfg.image_size, task), k, generator=gen)
        chosen = ranker.rank(sample.obs_latent, sample.actions).chosen if mode == "rank" and ranker and k > 1 else 0
        outcome.decision_ms.append(1e3 * (time.perf_counter() - t0))
        outcome.chosen_nonzero += int(chosen != 0)
        for action in sample.actions[chosen, : policy.cfg.exec_horizon].numpy():
            obs, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                outcome.success = bool(info.get("is_success", terminated and reward > 0))
                outcome.event = str(info.get("event", "terminated" if terminated else "truncated"))
                return outcome


def evaluate_gym(env_id: str, task: str, policy_path: str, wm_path: str | None = None, episodes: int = 20,
                 ks: tuple[int, ...] = (16,), seed: int = 1_000_000, out: str | None = None,
                 progress: bool = True, env_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    import wm_vla.sim.gym_env  # noqa: F401  (registers our own envs)

    policy, _, _ = load_checkpoint(Path(policy_path), expect="policy")
    assert isinstance(policy, FlarePolicy)
    ranker = None
    if wm_path:  # it ranks in this policy's latent: refuse one trained in another encoder's
        check_world_model_encoder(wm_path, policy_path)
        wm, _, _ = load_checkpoint(Path(wm_path), expect="world_model")
        assert isinstance(wm, LatentWorldModel)
        ranker = GpcRanker(wm, policy.action_mean, policy.action_std)
    env = gym.make(env_id, **(env_kwargs or {}))
    plan = [("single", 1)] + ([("rank", k) for k in ks] if ranker else [])
    rows = []
    for name, k in plan:
        outcomes = [run_gym_episode(env, policy, task, name, k, s, ranker)
                    for s in tqdm(range(seed, seed + episodes), desc=f"{env_id} {name} K={k}", disable=not progress)]
        rows.append(_row(name, k, "main", outcomes))
    env.close()
    report = {"world": env_id, "task": task, "policy": policy_path, "wm": wm_path, "seeds": [seed, seed + episodes - 1],
              "configs": rows}
    if out:
        write_eval_report(report, Path(out))
    return report
