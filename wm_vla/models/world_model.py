"""Latent world model in the policy's embedding space: (z_t, chunk) -> z_{t+H}, progress and failure heads.

The teacher is a wide residual MLP; the student has the same interface at a fraction of the width and depth, so
that K candidates roll out in one batched call. Both take normalised action chunks (B, H, A).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wm_vla.models.config import WorldModelConfig
from wm_vla.models.errors import ModelConfigError, ObservationError


@dataclass
class WorldModelOutput:
    next_latent: torch.Tensor    # (B, latent_dim): predicted z_{t+H}
    progress: torch.Tensor       # (B,): predicted discounted progress-to-success in [0, 1]
    failure_logit: torch.Tensor  # (B,): logit of "the episode fails within the chunk horizon"

    @property
    def failure_prob(self) -> torch.Tensor:
        return torch.sigmoid(self.failure_logit)


class _ResBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class LatentWorldModel(nn.Module):
    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        w = cfg.hidden
        self.inp = nn.Linear(cfg.latent_dim + cfg.horizon * cfg.action_dim, w)
        self.blocks = nn.Sequential(*(_ResBlock(w, cfg.dropout) for _ in range(cfg.layers)))
        self.norm = nn.LayerNorm(w)
        self.delta = nn.Linear(w, cfg.latent_dim)
        self.progress = nn.Linear(w, 1)
        self.failure = nn.Linear(w, 1)

    def forward(self, z: torch.Tensor, chunk_n: torch.Tensor) -> WorldModelOutput:
        c = self.cfg
        if z.dim() != 2 or z.shape[1] != c.latent_dim:
            raise ObservationError(f"world model expects z of shape (B, {c.latent_dim}), got {tuple(z.shape)}")
        if chunk_n.shape[1:] != (c.horizon, c.action_dim) or chunk_n.shape[0] != z.shape[0]:
            raise ObservationError(f"world model expects chunks (B, {c.horizon}, {c.action_dim}), got {tuple(chunk_n.shape)}")
        h = self.norm(self.blocks(self.inp(torch.cat([z, chunk_n.flatten(1)], dim=1))))
        return WorldModelOutput(z + self.delta(h), torch.sigmoid(self.progress(h))[:, 0], self.failure(h)[:, 0])


class WorldModelEnsemble(nn.Module):
    """Several world models trained on the same data (e.g. different seeds) used as one: the mean predicted latent,
    mean progress and mean failure probability. Same call and `cfg` as one `LatentWorldModel`, so the ranker and the
    distillation take either. Members must share latent size, horizon and action size."""

    def __init__(self, members: list[LatentWorldModel]) -> None:
        super().__init__()
        if not members:
            raise ModelConfigError("a world-model ensemble needs at least one member")
        first = members[0].cfg
        for m in members[1:]:
            c = m.cfg
            if (c.latent_dim, c.horizon, c.action_dim) != (first.latent_dim, first.horizon, first.action_dim):
                raise ModelConfigError(
                    "world-model ensemble members disagree on (latent_dim, horizon, action_dim): "
                    f"{(first.latent_dim, first.horizon, first.action_dim)} vs {(c.latent_dim, c.horizon, c.action_dim)}")
        self.members = nn.ModuleList(members)
        self.cfg = first

    def member_outputs(self, z: torch.Tensor, chunk_n: torch.Tensor) -> list[WorldModelOutput]:
        """Each member's prediction (for their disagreement)."""
        return [m(z, chunk_n) for m in self.members]

    def forward(self, z: torch.Tensor, chunk_n: torch.Tensor) -> WorldModelOutput:
        return self.combine(self.member_outputs(z, chunk_n))

    @staticmethod
    def combine(outs: list[WorldModelOutput]) -> WorldModelOutput:
        """The ensemble's prediction from its members': mean latent, progress and failure probability."""
        fail = torch.stack([o.failure_prob for o in outs]).mean(0).clamp(1e-6, 1 - 1e-6)
        return WorldModelOutput(torch.stack([o.next_latent for o in outs]).mean(0),
                                torch.stack([o.progress for o in outs]).mean(0), torch.logit(fail))


AnyWorldModel = LatentWorldModel | WorldModelEnsemble
