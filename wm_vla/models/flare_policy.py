"""FLARE VLA policy: a flow-matching DiT action head that also predicts the latent of the future observation.

Sequence: [state token, M future tokens, H noisy action tokens], conditioned on the flow time (adaLN) and
cross-attending to the observation context (camera, instruction and state tokens). The future tokens' hidden
states at an intermediate layer go through an MLP and are cosine-aligned (weight lambda) with an EMA target
encoder's latent of the observation at t+H. `sample(obs, K)` encodes the observation once for all K chunks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wm_vla.models.config import PolicyConfig
from wm_vla.models.dit import DiTBlock, timestep_embedding
from wm_vla.models.encoders import ObservationEncoder
from wm_vla.models.errors import ObservationError


@dataclass
class PolicySample:
    """K candidate chunks for one observation (raw action units), with the shared and per-sample latents."""

    actions: torch.Tensor         # (K, H, A)
    obs_latent: torch.Tensor      # (latent_dim,)
    future_latents: torch.Tensor  # (K, M, latent_dim)
    noise: torch.Tensor           # (K, H, A) initial noise (for exact replay)


@dataclass
class ObsBatch:
    """Model-ready observations: images (B, cams, 3, H, W) in [0, 1], raw state (B, S), instructions."""

    images: torch.Tensor
    state: torch.Tensor
    instructions: list[str]


class FlarePolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        d = cfg.dim
        self.encoder = ObservationEncoder(cfg)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.state_token = nn.Linear(cfg.state_dim, d)
        self.future_tokens = nn.Parameter(torch.randn(cfg.future_tokens, d) * 0.02)
        self.action_in = nn.Linear(cfg.action_dim, d)
        self.action_pos = nn.Parameter(torch.randn(cfg.horizon, d) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads) for _ in range(cfg.dit_layers))
        self.out_norm = nn.LayerNorm(d)
        self.action_out = nn.Linear(d, cfg.action_dim)
        self.flare_head = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, cfg.latent_dim))
        for name in ("state_mean", "action_mean"):
            self.register_buffer(name, torch.zeros(cfg.state_dim if name.startswith("state") else cfg.action_dim))
        for name in ("state_std", "action_std"):
            self.register_buffer(name, torch.ones(cfg.state_dim if name.startswith("state") else cfg.action_dim))

    # ----- normalisation -----
    def set_normalization(self, state_mean: torch.Tensor, state_std: torch.Tensor, action_mean: torch.Tensor,
                          action_std: torch.Tensor) -> None:
        self.state_mean.copy_(state_mean)
        self.state_std.copy_(state_std.clamp_min(1e-3))
        self.action_mean.copy_(action_mean)
        self.action_std.copy_(action_std.clamp_min(1e-3))

    def norm_state(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.state_mean) / self.state_std

    def norm_action(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.action_mean) / self.action_std

    def denorm_action(self, action: torch.Tensor) -> torch.Tensor:
        return action * self.action_std + self.action_mean

    # ----- encoding -----
    def check(self, obs: ObsBatch) -> None:
        c = self.cfg
        want = (len(c.cameras), 3, c.image_size, c.image_size)
        if obs.images.dim() != 5 or tuple(obs.images.shape[1:]) != want:
            raise ObservationError(f"images must be (B, {', '.join(map(str, want))}), got {tuple(obs.images.shape)}")
        if obs.state.dim() != 2 or obs.state.shape[1] != c.state_dim or obs.state.shape[0] != obs.images.shape[0]:
            raise ObservationError(f"state must be (B, {c.state_dim}) matching the images, got {tuple(obs.state.shape)}")
        if len(obs.instructions) != obs.images.shape[0]:
            raise ObservationError("one instruction per observation is required")
        if not torch.isfinite(obs.state).all() or not torch.isfinite(obs.images).all():
            raise ObservationError("observation contains NaN or inf")

    def encode(self, obs: ObsBatch, target: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (context tokens, context mask, observation latent z); `target` uses the EMA encoder."""
        self.check(obs)
        enc = self.target_encoder if target else self.encoder
        return enc(obs.images, self.norm_state(obs.state), obs.instructions)

    # ----- flow-matching head -----
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor,
                 state_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted velocity (B, H, A) for normalised noisy actions, and FLARE future latents (B, M, latent)."""
        b = x_t.shape[0]
        tokens = torch.cat([self.state_token(state_n)[:, None], self.future_tokens.expand(b, -1, -1),
                            self.action_in(x_t) + self.action_pos], dim=1)
        cond = self.time_mlp(timestep_embedding(t, self.cfg.dim))
        m = self.cfg.future_tokens
        future = tokens[:, 1:1 + m]
        for i, block in enumerate(self.blocks, start=1):
            tokens = block(tokens, cond, context, context_mask)
            if i == self.cfg.flare_layer:
                future = tokens[:, 1:1 + m]
        return self.action_out(self.out_norm(tokens[:, 1 + m:])), self.flare_head(future)

    def loss(self, obs: ObsBatch, actions: torch.Tensor, action_pad: torch.Tensor, future_obs: ObsBatch,
             flare_weight: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Flow-matching loss on the chunk (padding masked) + lambda * (1 - cos) FLARE alignment."""
        lam = self.cfg.flare_weight if flare_weight is None else flare_weight
        context, mask, _z = self.encode(obs)
        target_actions = self.norm_action(actions)
        noise = torch.randn_like(target_actions)
        t = torch.sigmoid(torch.randn(actions.shape[0], device=actions.device))  # logit-normal flow time
        x_t = t[:, None, None] * target_actions + (1 - t[:, None, None]) * noise
        v_pred, future = self.velocity(x_t, t, context, mask, self.norm_state(obs.state))
        valid = (~action_pad).float()[..., None]
        flow = (((v_pred - (target_actions - noise)) ** 2) * valid).sum() / (valid.sum() * actions.shape[-1]).clamp_min(1)
        with torch.no_grad():
            target_z = self.encode(future_obs, target=True)[2]
        flare = 1.0 - F.cosine_similarity(future, target_z[:, None].expand_as(future), dim=-1).mean()
        total = flow + lam * flare if lam > 0 else flow
        return total, {"loss": float(total.detach()), "flow": float(flow.detach()), "flare": float(flare.detach())}

    def forward(self, obs: ObsBatch, actions: torch.Tensor, action_pad: torch.Tensor, future_obs: ObsBatch
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training forward = `loss` (so DistributedDataParallel all-reduces its gradients)."""
        return self.loss(obs, actions, action_pad, future_obs)

    @torch.no_grad()
    def update_target(self) -> None:
        decay = self.cfg.ema_decay
        for p_t, p in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            p_t.lerp_(p, 1.0 - decay)
        for b_t, b in zip(self.target_encoder.buffers(), self.encoder.buffers()):
            b_t.copy_(b)

    @torch.no_grad()
    def sample_many(self, obs: ObsBatch, k: int, generator: torch.Generator | None = None, steps: int | None = None,
                    noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """K chunks for each of B observations, each observation encoded once.

        Returns raw actions (B, K, H, A), latents z (B, latent), future latents (B, K, M, latent), noise (B, K, H, A).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        c = self.cfg
        b = obs.images.shape[0]
        context, mask, z = self.encode(obs)
        if noise is None:  # one draw per candidate, in order: candidate i is the same whatever K is
            noise = torch.stack([torch.randn(c.horizon, c.action_dim, generator=generator) for _ in range(b * k)])
            noise = noise.reshape(b, k, c.horizon, c.action_dim).to(obs.images.device)
        flat = noise.reshape(b * k, c.horizon, c.action_dim)
        x, future = self.sample_from_context(context, mask, self.norm_state(obs.state), flat, steps)
        shape = (b, k)
        return (x.reshape(*shape, c.horizon, c.action_dim), z, future.reshape(*shape, c.future_tokens, c.latent_dim),
                noise.reshape(*shape, c.horizon, c.action_dim))

    @torch.no_grad()
    def sample_from_context(self, context: torch.Tensor, mask: torch.Tensor, state_n: torch.Tensor, noise: torch.Tensor,
                            steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Euler-integrate the flow from noise (B*K, H, A) for B encoded observations (K = noise rows / B).

        Returns raw actions (B*K, H, A) and the FLARE future latents of the last step (B*K, M, latent).
        """
        c = self.cfg
        k = noise.shape[0] // context.shape[0]
        context, mask = context.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
        state_n = state_n.repeat_interleave(k, 0)
        x = noise.clone()
        n = steps or c.denoise_steps
        future = torch.zeros(x.shape[0], c.future_tokens, c.latent_dim, device=x.device)
        for i in range(n):
            t = torch.full((x.shape[0],), i / n, device=x.device)
            v, future = self.velocity(x, t, context, mask, state_n)
            x = x + v / n
        return self.denorm_action(x), future

    def sample(self, obs: ObsBatch, k: int, generator: torch.Generator | None = None, steps: int | None = None,
               noise: torch.Tensor | None = None) -> PolicySample:
        """K chunks for ONE observation; the observation is encoded once and shared by all K samples."""
        if obs.images.shape[0] != 1:
            raise ObservationError(f"sample() takes one observation, got a batch of {obs.images.shape[0]}")
        actions, z, future, used = self.sample_many(obs, k, generator, steps, None if noise is None else noise[None])
        return PolicySample(actions[0], z[0], future[0], used[0])
