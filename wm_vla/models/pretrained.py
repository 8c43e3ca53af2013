"""Pretrained Hugging Face vision and text towers loaded from a LOCAL directory (no hub access, safetensors only).

A tower directory is what `save_pretrained(..., safe_serialization=True)` writes: `config.json` +
`model.safetensors` (+ tokenizer files for text towers). Directories holding only pickled weights
(`pytorch_model.bin`) are refused. The tower's outputs are projected to the policy's token width.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wm_vla.models.errors import CheckpointError


def _check_tower_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{what} directory {p} does not exist")
    if not (p / "config.json").is_file():
        raise CheckpointError(f"{what} directory {p} has no config.json (expected a save_pretrained() folder)")
    if not any(p.glob("*.safetensors")):
        pickled = [f.name for f in p.glob("*.bin")]
        hint = f" (found pickled {pickled}: convert them to safetensors first)" if pickled else ""
        raise CheckpointError(f"{what} directory {p} has no *.safetensors weights{hint}")
    return p


class PretrainedVisionTower(nn.Module):
    """Patch tokens of a local HF vision model (ViT, SigLIP, DINOv2, ...), projected to `dim`."""

    def __init__(self, path: str | Path, dim: int) -> None:
        super().__init__()
        p = _check_tower_dir(path, "vision tower")  # before importing transformers: refuse fast
        from transformers import AutoModel

        model = AutoModel.from_pretrained(p, local_files_only=True, use_safetensors=True)
        self.model = getattr(model, "vision_model", model)
        cfg = self.model.config
        self.input_size = int(cfg.image_size)
        self.proj = nn.Linear(int(cfg.hidden_size), dim)
        self.register_buffer("mean", torch.full((3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((3, 1, 1), 0.5))
        self.num_tokens = self(torch.zeros(1, 3, self.input_size, self.input_size)).shape[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> (B, tokens, dim)."""
        if images.shape[-1] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        hidden = self.model(pixel_values=(images - self.mean) / self.std).last_hidden_state
        return self.proj(hidden)


class PretrainedTextTower(nn.Module):
    """Token states of a local HF text encoder (BERT, T5-encoder, ...) and its tokenizer, projected to `dim`."""

    def __init__(self, path: str | Path, dim: int, max_words: int) -> None:
        super().__init__()
        p = _check_tower_dir(path, "text tower")
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
        model = AutoModel.from_pretrained(p, local_files_only=True, use_safetensors=True)
        self.model = model.get_encoder() if hasattr(model, "get_encoder") else model
        self.max_tokens = max_words + 2
        self.proj = nn.Linear(int(self.model.config.hidden_size), dim)

    def forward(self, instructions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(instructions, padding="max_length", truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(device)
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return self.proj(hidden), batch["attention_mask"].bool()
