"""Shared training plumbing: seeding, distributed (torchrun) setup, optimiser state in safetensors."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group when started by torchrun/accelerate (WORLD_SIZE > 1): gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Flatten an optimiser's state into named tensors (for safetensors) + its JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {f"opt/{pid}/{k}": (v if torch.is_tensor(v) else torch.tensor(v)) for pid, st in sd["state"].items()
               for k, v in st.items()}
    return tensors, sd["param_groups"]


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("opt/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random-translation augmentation (DrQ-style) of (B, cams, 3, S, S) images by up to `pad` pixels."""
    b, c, ch, h, w = images.shape
    flat = images.reshape(b * c, ch, h, w)
    shift = (torch.randint(-pad, pad + 1, (b * c, 2), generator=generator).float() * 2 / h)
    theta = torch.zeros(b * c, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = torch.nn.functional.affine_grid(theta, list(flat.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(flat, grid, padding_mode="border", align_corners=False)
    return out.reshape(b, c, ch, h, w)
