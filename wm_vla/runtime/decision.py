"""One decision on any backend: encode the observation once, sample K chunks, roll the world model, score."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from wm_vla.models.encoders import UNK
from wm_vla.runtime.backends.base import Backend
from wm_vla.runtime.ranker import KinematicPenalty, RankerConfig, Ranking, score_candidates
from wm_vla.runtime.spec import candidate_noise


@dataclass
class Decision:
    actions: np.ndarray           # (K, H, A) raw candidate chunks
    chosen: int                   # index of the chunk to execute
    obs_latent: np.ndarray        # (latent_dim,)
    future_latents: np.ndarray    # (K, M, latent_dim)
    ranking: Ranking | None       # None: policy only (candidate 0 executes)
    stage_ms: dict[str, float] = field(default_factory=dict)
    wm_latent: np.ndarray | None = None  # the world model's encoder's latent (with a wm_backend), else None

    @property
    def chunk(self) -> np.ndarray:
        return self.actions[self.chosen]

    @property
    def rank_latent(self) -> np.ndarray:
        """The latent the world model works in: wm_latent with a world-model encoder, else obs_latent."""
        return self.obs_latent if self.wm_latent is None else self.wm_latent


class DecisionPipeline:
    """Policy sampling plus GPC-RANK on one backend; `rank=False` is the policy-only decision (same samples).
    `wm_backend`: when the world model ranks in another policy's latent (a wm_encoder), that policy + the world model;
    it encodes the observation once more (stage `wm_encode`) and rolls the candidates out."""

    def __init__(self, backend: Backend, penalty: KinematicPenalty | None = None,
                 config: RankerConfig | None = None, wm_backend: Backend | None = None) -> None:
        self.backend, self.penalty, self.cfg = backend, penalty, config or RankerConfig()
        self.wm_backend = wm_backend

    def decide(self, images: np.ndarray, state: np.ndarray, instruction: str, noise: np.ndarray, rank: bool = True,
               goal: np.ndarray | None = None) -> Decision:
        t0 = time.perf_counter()
        enc = self.backend.encode(images, state, instruction)
        t1 = time.perf_counter()
        cand = self.backend.sample(enc, noise)
        t2 = time.perf_counter()
        stage = {"encode": 1e3 * (t1 - t0), "sample": 1e3 * (t2 - t1)}
        ranking = None
        ranker = self.wm_backend or self.backend
        wm_latent = None
        if rank and ranker.spec.has_world_model:
            if self.wm_backend is not None:  # the world model's own encoder
                wm_latent = self.wm_backend.encode(images, state, instruction).obs_latent
                t_wm = time.perf_counter()
                stage["wm_encode"], t2 = 1e3 * (t_wm - t2), t_wm
            z = enc.obs_latent if wm_latent is None else wm_latent
            roll = ranker.rollout(z, cand if ranker is self.backend else cand.actions)
            t3 = time.perf_counter()
            goal_sim = None
            if goal is not None and self.cfg.goal_weight:
                g = np.asarray(goal, np.float64)
                nl = roll.next_latent.astype(np.float64)
                goal_sim = nl @ g / np.maximum(np.linalg.norm(nl, axis=1) * np.linalg.norm(g), 1e-8)
            ranking = score_candidates(roll.progress, roll.failure_prob, cand.actions, self.penalty, self.cfg, goal_sim)
            t4 = time.perf_counter()
            ranking.stage_ms = {"wm_rollout": 1e3 * (t3 - t2), "score": 1e3 * (t4 - t3)}
            stage.update(ranking.stage_ms)
        stage["total"] = 1e3 * (time.perf_counter() - t0)
        return Decision(cand.actions, ranking.chosen if ranking else 0, enc.obs_latent, cand.future_latents, ranking,
                        stage, wm_latent)


def warm_up(backend: Backend, k: int, sample: bool = True, rollout: bool = True) -> float:
    """One decision's model calls on a blank observation (K candidates), so that the first real decision does not pay
    for lazy initialisation: the tiny torch policy's first K=16 decision takes ~0.6 s against ~0.17 s after. `sample`:
    encode + sample; `rollout`: the world model on K zero chunks (when the backend has one). Returns seconds spent."""
    t0 = time.perf_counter()
    spec = backend.spec
    k = max(1, min(k, backend.k_max or k))
    if sample:
        images = np.zeros((1, len(spec.cameras), 3, spec.image_size, spec.image_size), np.float32)
        words = [w for w in spec.vocab if w != UNK][: spec.max_words] or ["warm", "up"]
        enc = backend.encode(images, np.zeros((1, spec.state_dim), np.float32), " ".join(words))
        backend.sample(enc, candidate_noise(spec.horizon, spec.action_dim, k, 0))
    if rollout and spec.has_world_model:
        backend.rollout(np.zeros(spec.latent_dim, np.float32), np.zeros((k, spec.horizon, spec.action_dim), np.float32))
    return time.perf_counter() - t0
