"""The one image preprocessing shared by training and inference (a mismatch silently hurts the policy)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, size, size): bilinear on [0, 1] floats, rounded back to uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float() / 255.0, size=(size, size), mode="bilinear", align_corners=False)
    return (out.clamp(0, 1) * 255).round().to(torch.uint8)
