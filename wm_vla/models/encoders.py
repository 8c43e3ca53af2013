"""Observation encoders of the tiny/base presets: CNN image tokens, word-level instruction tokens, a state token."""

from __future__ import annotations

import re

import torch
from torch import nn

from wm_vla.models.config import PolicyConfig
from wm_vla.models.errors import ObservationError

UNK = "<unk>"


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def build_vocab(instructions: list[str]) -> tuple[str, ...]:
    """Sorted word list of the training instructions, "<unk>" first."""
    return (UNK, *sorted({w for t in instructions for w in tokenize(t)}))


class ImageEncoder(nn.Module):
    """Strided CNN -> a square grid of tokens per camera, plus one token of spatial-softmax keypoints.

    The keypoints (expected x, y of learned feature maps at the second-to-last resolution) keep the precise
    object positions that pooling throws away. With `film`, an instruction vector scales and shifts every stage's
    normalised features (FiLM, as in RT-1), so the keypoints can follow the object the instruction names.
    """

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        c_in = 3
        for c_out in cfg.cnn_channels:
            self.stages.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                                             nn.GroupNorm(min(8, c_out // 2), c_out), nn.SiLU()))
            c_in = c_out
        # FiLM heads start at zero: an untrained head leaves the CNN unconditioned
        self.film = nn.ModuleList(nn.Linear(cfg.dim, 2 * c, bias=True) for c in cfg.cnn_channels) if cfg.film else None
        if self.film is not None:
            for head in self.film:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        side = int(round(cfg.image_tokens ** 0.5))
        self.pool = nn.AdaptiveAvgPool2d(side)
        self.proj = nn.Linear(c_in, cfg.dim)
        self.keypoints = cfg.keypoints
        if cfg.keypoints:
            self.kp_conv = nn.Conv2d(cfg.cnn_channels[-2], cfg.keypoints, 1)
            self.kp_proj = nn.Sequential(nn.Linear(2 * cfg.keypoints, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))

    @property
    def tokens_per_image(self) -> int:
        return int(self.pool.output_size ** 2) + (1 if self.keypoints else 0)  # type: ignore[operator]

    def forward(self, images: torch.Tensor, instruction: torch.Tensor | None = None) -> torch.Tensor:
        """images: (B, 3, H, W) float in [0, 1], instruction: (B, dim) with `film` -> (B, tokens, dim)."""
        x = images * 2.0 - 1.0
        feats = []
        for i, stage in enumerate(self.stages):
            x = film_stage(stage, x, self.film[i] if self.film is not None else None, instruction)
            feats.append(x)
        tokens = self.proj(self.pool(x).flatten(2).transpose(1, 2))
        if not self.keypoints:
            return tokens
        fmap = self.kp_conv(feats[-2])
        b, k, h, w = fmap.shape
        heat = torch.softmax(fmap.flatten(2), dim=-1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=fmap.device), torch.linspace(-1, 1, w, device=fmap.device),
                                indexing="ij")
        coords = heat @ torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # (B, K, 2)
        return torch.cat([tokens, self.kp_proj(coords.flatten(1))[:, None]], dim=1)


def film_stage(stage: nn.Module, x: torch.Tensor, head: nn.Module | None, instruction: torch.Tensor | None
               ) -> torch.Tensor:
    """conv -> GroupNorm -> (FiLM: x * (1 + gamma) + beta) -> SiLU."""
    if head is None:
        return stage(x)
    if instruction is None:
        raise ObservationError("a FiLM image encoder needs the instruction vector")
    conv, norm, act = stage
    gamma, beta = head(instruction)[:, :, None, None].chunk(2, dim=1)
    return act(norm(conv(x)) * (1.0 + gamma) + beta)


def instruction_vector(text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of the instruction tokens (B, W, dim) -> (B, dim): the FiLM conditioning."""
    m = mask.to(text.dtype)[..., None]
    return (text * m).sum(1) / m.sum(1).clamp_min(1.0)


class InstructionEncoder(nn.Module):
    """Word embeddings + positions; unknown words map to "<unk>" (the tiny learned text tower)."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.vocab = {w: i for i, w in enumerate(cfg.vocab or (UNK,))}
        self.max_words = cfg.max_words
        self.embed = nn.Embedding(len(self.vocab), cfg.dim)
        self.pos = nn.Parameter(torch.zeros(cfg.max_words, cfg.dim))
        nn.init.normal_(self.pos, std=0.02)

    def token_ids(self, instructions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(instructions), self.max_words, dtype=torch.long, device=device)
        mask = torch.zeros(len(instructions), self.max_words, dtype=torch.bool, device=device)
        for row, text in enumerate(instructions):
            words = tokenize(text)[: self.max_words] or [UNK]
            ids[row, : len(words)] = torch.tensor([self.vocab.get(w, 0) for w in words])
            mask[row, : len(words)] = True
        return ids, mask

    def forward(self, instructions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens (B, max_words, dim) and a validity mask (B, max_words)."""
        ids, mask = self.token_ids(instructions, device)
        return self.embed(ids) + self.pos, mask


class ObservationEncoder(nn.Module):
    """Fuses camera, instruction and state tokens; returns context tokens and the observation latent z."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.vision_tower:
            from wm_vla.models.pretrained import PretrainedVisionTower

            self.image: nn.Module = PretrainedVisionTower(cfg.vision_tower, cfg.dim)
            tokens = self.image.num_tokens
        else:
            self.image = ImageEncoder(cfg)
            tokens = self.image.tokens_per_image
        self.camera_embed = nn.Parameter(torch.zeros(len(cfg.cameras), tokens, cfg.dim))
        nn.init.normal_(self.camera_embed, std=0.02)
        if cfg.text_tower:
            from wm_vla.models.pretrained import PretrainedTextTower

            self.text: nn.Module = PretrainedTextTower(cfg.text_tower, cfg.dim, cfg.max_words)
        else:
            self.text = InstructionEncoder(cfg)
        self.state = nn.Sequential(nn.Linear(cfg.state_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 4 * cfg.dim, dropout=0.0, batch_first=True, norm_first=True)
        self.fuse = nn.TransformerEncoder(layer, cfg.encoder_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.latent = nn.Linear(cfg.dim, cfg.latent_dim)

    def forward(self, images: torch.Tensor, state: torch.Tensor, instructions: list[str]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images (B, cams, 3, H, W) in [0,1], normalised state (B, S) -> (context, context mask, z)."""
        b, n_cam = images.shape[:2]
        text, text_mask = self.text(instructions, images.device)
        film = (instruction_vector(text, text_mask).repeat_interleave(n_cam, 0),) if self.cfg.film else ()
        img = self.image(images.flatten(0, 1), *film).unflatten(0, (b, n_cam)) + self.camera_embed
        tokens = torch.cat([img.flatten(1, 2), text, self.state(state)[:, None]], dim=1)
        mask = torch.cat([torch.ones(b, img.shape[1] * img.shape[2], dtype=torch.bool, device=images.device), text_mask,
                          torch.ones(b, 1, dtype=torch.bool, device=images.device)], dim=1)
        context = self.norm(self.fuse(tokens, src_key_padding_mask=~mask))
        pooled = (context * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return context, mask, self.latent(pooled)
