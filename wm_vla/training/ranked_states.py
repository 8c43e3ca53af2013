"""States the ranked policy visits in closed loop, with its K candidates there: distillation data for the student.

The student only has to agree with the teacher where the deployed stack ranks. Distilling on the labelled decisions
alone (a few hundred) leaves it short of that; the teacher labels any candidate for free, so more of the states the
ranked stack itself visits can be recorded (no true outcomes needed) and added to `wm-vla train distill`
(`--ranked-states DIR`). Stored as safetensors (latents, normalised chunks) + meta.json, never pickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from wm_vla.models.checkpoint import weights_digest
from wm_vla.training.errors import DatasetFeatureError, TrainingConfigError

STATES_FILE, META_FILE = "states.safetensors", "meta.json"


@dataclass
class RankedStatesConfig:
    policy: str                 # the acting policy
    wm: str                     # the world model that ranks while recording (e.g. the current student)
    out: str
    wm_encoder: str | None = None   # the policy whose encoder gives the world model its latent (None: the acting one)
    episodes: int = 100
    seed: int = 500_000         # training range: below the held-out seeds of `wm-vla eval sim`
    k: int = 16
    switch_margin: float = 0.1
    world: str = "arm"
    progress: bool = True

    def validate(self) -> None:
        from wm_vla.eval.closed_loop import HELDOUT_SEED

        if self.episodes < 1 or self.k < 2:
            raise TrainingConfigError(f"need episodes >= 1 and k >= 2, got {self.episodes} and {self.k}")
        if self.seed + self.episodes > HELDOUT_SEED:
            raise TrainingConfigError(f"seeds {self.seed}..{self.seed + self.episodes - 1} reach the held-out range "
                                      f"(>= {HELDOUT_SEED}): distilling on evaluation states would bias the eval")


def record_ranked_states(cfg: RankedStatesConfig) -> dict[str, Any]:
    """Run `cfg.episodes` ranked closed-loop episodes; store each decision's world-model latent and K candidates."""
    from wm_vla.eval.closed_loop import (build_ranker, eval_tasks_for, load_policy, make_world, run_episode,
                                         wm_latent)

    cfg.validate()
    policy = load_policy(cfg.policy)
    encoder = load_policy(cfg.wm_encoder) if cfg.wm_encoder else policy
    world = make_world(cfg.world)
    ranker = build_ranker(cfg.wm, encoder, world, cfg.switch_margin)
    tasks = eval_tasks_for(cfg.world, None, policy)
    latents: list[torch.Tensor] = []
    chunks: list[torch.Tensor] = []

    def on_decision(obs: Any, candidates: Any, _chosen: int) -> None:
        with torch.no_grad():
            latents.append(wm_latent(encoder, obs).reshape(1, -1))
        chunks.append(encoder.norm_action(torch.as_tensor(candidates)))  # as the world models see chunks

    successes = 0
    for seed in tqdm(range(cfg.seed, cfg.seed + cfg.episodes), desc="ranked episodes", unit="ep",
                     disable=not cfg.progress):
        successes += run_episode(world, policy, "rank", cfg.k, seed, ranker, family=tasks, on_decision=on_decision,
                                 wm_encoder=encoder if cfg.wm_encoder else None).success
    world.close()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"latent": torch.cat(latents).contiguous(), "chunks": torch.stack(chunks).contiguous()},
              str(out / STATES_FILE))
    meta = {"decisions": len(latents), "k": cfg.k, "successes": successes,
            "encoder_digest": weights_digest(cfg.wm_encoder or cfg.policy), "config": asdict(cfg)}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return {"out": str(out), **{key: meta[key] for key in ("decisions", "k", "successes")}, "episodes": cfg.episodes}


def check_ranked_states(path: str | Path, latent_policy: str) -> Path:
    """The folder, when it holds ranked states recorded in `latent_policy`'s latent (cheap: before any training)."""
    folder = Path(path)
    if not (folder / STATES_FILE).is_file() or not (folder / META_FILE).is_file():
        raise DatasetFeatureError(f"{folder}: not a ranked-states folder (needs {STATES_FILE} and {META_FILE}; "
                                  "make one with `wm-vla train ranked-states`)")
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise DatasetFeatureError(f"{folder}: unreadable {META_FILE}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("encoder_digest") != weights_digest(latent_policy):
        raise DatasetFeatureError(f"{folder}: recorded in the latent of another encoder than {latent_policy}")
    return folder


def load_ranked_decisions(path: str | Path, latent_policy: str, latent_dim: int, horizon: int,
                          action_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents (N, D), normalised chunks (N, K, H, A)) of a recorded folder: its N decisions as recorded, K
    candidates each, the policy's first sample first."""
    folder = check_ranked_states(path, latent_policy)
    try:
        tensors = load_file(str(folder / STATES_FILE))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # truncated or foreign safetensors
        raise DatasetFeatureError(f"{folder}: unreadable ranked states: {exc}") from exc
    z, c = tensors.get("latent"), tensors.get("chunks")
    if z is None or c is None or z.ndim != 2 or c.ndim != 4 or len(z) != len(c):
        raise DatasetFeatureError(f"{folder}: expected 'latent' (N, D) and 'chunks' (N, K, H, A)")
    if z.shape[1] != latent_dim or tuple(c.shape[2:]) != (horizon, action_dim):
        raise DatasetFeatureError(f"{folder}: latent {z.shape[1]}-d, chunks {tuple(c.shape[2:])}; the world model "
                                  f"needs {latent_dim}-d and ({horizon}, {action_dim})")
    if not (torch.isfinite(z).all() and torch.isfinite(c).all()):
        raise DatasetFeatureError(f"{folder}: non-finite values")
    return z.float(), c.float()

