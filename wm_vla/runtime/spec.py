"""What every backend needs to know about the exported models, plus input checks and tokenisation shared by all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wm_vla.models.encoders import UNK, tokenize
from wm_vla.runtime.errors import InputShapeError, InstructionError


@dataclass(frozen=True)
class ModelSpec:
    """Shapes and vocabulary of one policy (+ optional world model), as recorded in `export.json`."""

    preset: str
    cameras: tuple[str, ...]
    image_size: int
    state_dim: int
    action_dim: int
    horizon: int
    latent_dim: int
    future_tokens: int
    steps: int
    max_words: int
    vocab: tuple[str, ...]
    context_tokens: int
    has_world_model: bool

    @classmethod
    def from_policy_config(cls, cfg: Any, steps: int | None, has_world_model: bool) -> ModelSpec:
        per_image = cfg.image_tokens + (1 if cfg.keypoints else 0)
        return cls(cfg.preset, tuple(cfg.cameras), cfg.image_size, cfg.state_dim, cfg.action_dim, cfg.horizon,
                   cfg.latent_dim, cfg.future_tokens, int(steps or cfg.denoise_steps), cfg.max_words,
                   tuple(cfg.vocab or (UNK,)), len(cfg.cameras) * per_image + cfg.max_words + 1, has_world_model)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        fields = dict(data)
        fields["cameras"], fields["vocab"] = tuple(fields["cameras"]), tuple(fields["vocab"])
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "cameras": list(self.cameras), "vocab": list(self.vocab)}

    # ----- inputs -----
    def unknown_words(self, instruction: str) -> list[str]:
        """Words of `instruction` outside the vocabulary; InstructionError when it has no word, or no known word
        (a vocabulary of only <unk>, e.g. a pretrained text tower, is open: only emptiness is checked)."""
        words = tokenize(instruction)
        if not words:
            raise InstructionError(f"instruction {instruction!r} has no words")
        known = set(self.vocab) - {UNK}
        unknown = [w for w in words if w not in known] if known else []
        if known and len(unknown) == len(words):
            raise InstructionError(f"no word of instruction {instruction!r} is in the policy's vocabulary "
                                   f"({len(known)} words, e.g. {sorted(known)[:6]})")
        return unknown

    def token_ids(self, instruction: str) -> tuple[np.ndarray, np.ndarray]:
        """(1, max_words) int64 word ids and bool mask, exactly as `InstructionEncoder.token_ids`."""
        index = {w: i for i, w in enumerate(self.vocab)}
        words = tokenize(instruction)[: self.max_words] or [UNK]
        ids = np.zeros((1, self.max_words), np.int64)
        mask = np.zeros((1, self.max_words), bool)
        ids[0, : len(words)] = [index.get(w, 0) for w in words]
        mask[0, : len(words)] = True
        return ids, mask

    def check_observation(self, images: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One observation: images (1, cams, 3, S, S) float in [0, 1], raw state (1, state_dim) -> float32 copies."""
        want = (1, len(self.cameras), 3, self.image_size, self.image_size)
        if tuple(np.shape(images)) != want:
            raise InputShapeError(f"images must have shape {want}, got {tuple(np.shape(images))}")
        if tuple(np.shape(state)) != (1, self.state_dim):
            raise InputShapeError(f"state must have shape (1, {self.state_dim}), got {tuple(np.shape(state))}")
        images, state = np.ascontiguousarray(images, np.float32), np.ascontiguousarray(state, np.float32)
        if not (np.isfinite(images).all() and np.isfinite(state).all()):
            raise InputShapeError("observation contains NaN or inf")
        return images, state

    def check_noise(self, noise: np.ndarray, k_max: int | None = None) -> np.ndarray:
        """Sampling noise (K, H, A), K >= 1 (and <= k_max where the backend has a limit) -> float32."""
        shape = tuple(np.shape(noise))
        if len(shape) != 3 or shape[1:] != (self.horizon, self.action_dim) or shape[0] < 1:
            raise InputShapeError(f"noise must have shape (K, {self.horizon}, {self.action_dim}) with K >= 1, got {shape}")
        if k_max is not None and shape[0] > k_max:
            raise InputShapeError(f"K={shape[0]} exceeds this backend's maximum K={k_max}")
        return np.ascontiguousarray(noise, np.float32)

    def check_candidates(self, obs_latent: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World-model inputs: latent (latent_dim,) or (1, latent_dim) and raw chunks (K, H, A) -> float32."""
        z = np.asarray(obs_latent, np.float32).reshape(1, -1) if np.ndim(obs_latent) == 1 else np.asarray(obs_latent)
        if z.shape != (1, self.latent_dim):
            raise InputShapeError(f"obs_latent must have shape ({self.latent_dim},) or (1, {self.latent_dim}), "
                                  f"got {tuple(np.shape(obs_latent))}")
        a = np.shape(actions)
        if len(a) != 3 or a[1:] != (self.horizon, self.action_dim) or a[0] < 1:
            raise InputShapeError(f"actions must have shape (K, {self.horizon}, {self.action_dim}), got {tuple(a)}")
        return np.ascontiguousarray(z, np.float32), np.ascontiguousarray(actions, np.float32)


def candidate_noise(horizon: int, action_dim: int, k: int, seed: int) -> np.ndarray:
    """(K, H, A) standard-normal noise drawn like `FlarePolicy.sample`: candidate i is the same whatever K is."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(horizon, action_dim, generator=gen) for _ in range(k)]).numpy()
