"""Tiny real models and exports for the runtime tests (built in-test, 64 px images, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wm_vla.models.checkpoint import save_checkpoint
from wm_vla.models.config import policy_preset, world_model_preset
from wm_vla.models.flare_policy import FlarePolicy
from wm_vla.models.world_model import LatentWorldModel
from wm_vla.runtime.spec import ModelSpec

VOCAB = ("<unk>", "touch", "the", "red", "green", "cube")
SMALL = dict(image_size=64, dim=32, heads=2, dit_layers=2, flare_layer=1, latent_dim=16, cnn_channels=(8, 16),
             horizon=8, exec_horizon=4, vocab=VOCAB, denoise_steps=4, max_words=6, keypoints=4)


def tiny_models(seed: int = 0, **overrides: object) -> tuple[FlarePolicy, LatentWorldModel]:
    """A policy with non-trivial normalisation and random adaLN weights (so every path matters) + a student."""
    torch.manual_seed(seed)
    policy = FlarePolicy(policy_preset("tiny", **{**SMALL, **overrides}))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for blk in policy.blocks:  # adaLN-Zero starts at zero: give it weights, or the DiT blocks are identities
            blk.ada[1].weight.normal_(0, 0.05, generator=g)
            blk.ada[1].bias.normal_(0, 0.05, generator=g)
        for head in policy.encoder.image.film or ():  # FiLM heads start at zero too
            head.weight.normal_(0, 0.1, generator=g)
    policy.set_normalization(torch.randn(7, generator=g), torch.rand(7, generator=g) + 0.5,
                             torch.randn(7, generator=g), torch.rand(7, generator=g) + 0.5)
    cfg = policy.cfg
    wm = LatentWorldModel(world_model_preset("student", latent_dim=cfg.latent_dim, horizon=cfg.horizon,
                                             action_dim=cfg.action_dim, hidden=32))
    return policy.eval(), wm.eval()


def save_models(policy: FlarePolicy, wm: LatentWorldModel, root: Path) -> tuple[Path, Path]:
    return save_checkpoint(policy, root / "policy"), save_checkpoint(wm, root / "wm")


def observation(spec: ModelSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((1, len(spec.cameras), 3, spec.image_size, spec.image_size), dtype=np.float32)
    return images, rng.standard_normal((1, spec.state_dim)).astype(np.float32)
