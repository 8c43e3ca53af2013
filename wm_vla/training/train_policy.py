"""`wm-vla train policy`: FLARE VLA on a LeRobotDataset v3 (flow matching + lambda * future-latent alignment)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from wm_vla.models.checkpoint import load_checkpoint, save_checkpoint
from wm_vla.models.config import policy_preset
from wm_vla.models.encoders import build_vocab
from wm_vla.models.flare_policy import FlarePolicy, ObsBatch
from wm_vla.training.common import (
    init_distributed,
    optimizer_tensors,
    random_shift,
    restore_optimizer,
    seed_everything,
)
from wm_vla.training.datasets import Windows, load_frames
from wm_vla.training.errors import DatasetFeatureError


@dataclass
class PolicyTrainConfig:
    dataset: str
    out: str
    preset: str = "tiny"
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    flare_weight: float = 0.2
    film: bool = False
    horizon: int = 16
    exec_horizon: int = 8
    seed: int = 0
    save_every: int = 1000
    augment_pixels: int = 3
    resume: bool = False
    progress: bool = True


def lr_factor(step: int, total: int, warmup: int = 200, floor: float = 0.02) -> float:
    """Linear warm-up, then cosine decay to `floor` of the base learning rate."""
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    return min(1.0, (step + 1) / warmup) * (floor + (1.0 - floor) * cosine)


def train_policy(cfg: PolicyTrainConfig) -> dict[str, Any]:
    """Train (or resume) a policy; writes a checkpoint directory and `train_log.json`; returns final metrics."""
    info = init_distributed()
    gen = seed_everything(cfg.seed + 1000 * info.rank)
    out = Path(cfg.out)
    resume = cfg.resume and (out / "config.json").is_file()
    if resume:
        model, extra, tensors = load_checkpoint(out, expect="policy")
        assert isinstance(model, FlarePolicy)
        model.train()
        pcfg = model.cfg
        start = int(extra["step"])
    else:
        pcfg = None
        start, extra, tensors = 0, {}, {}
    store = load_frames(cfg.dataset, image_size=pcfg.image_size if pcfg else policy_preset(cfg.preset).image_size,
                        cameras=pcfg.cameras if pcfg else None, progress=cfg.progress and info.is_main)
    if pcfg is None:
        pcfg = policy_preset(cfg.preset, cameras=store.cameras, state_dim=store.state.shape[1],
                             action_dim=store.action.shape[1], horizon=cfg.horizon, exec_horizon=cfg.exec_horizon,
                             vocab=build_vocab(store.tasks), flare_weight=cfg.flare_weight, film=cfg.film,
                             fps=store.fps)
        model = FlarePolicy(pcfg)
        model.set_normalization(store.state.mean(0), store.state.std(0), store.action.mean(0), store.action.std(0))
        model.target_encoder.load_state_dict(model.encoder.state_dict())
    if (store.state.shape[1], store.action.shape[1]) != (pcfg.state_dim, pcfg.action_dim):
        raise DatasetFeatureError(f"{cfg.dataset}: state/action dims {store.state.shape[1]}/{store.action.shape[1]} do not "
                                  f"match the checkpoint's {pcfg.state_dim}/{pcfg.action_dim}")
    windows = Windows(store, pcfg.horizon)
    trainable = [p for n, p in model.named_parameters() if not n.startswith("target_encoder.")]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if resume and tensors:
        restore_optimizer(opt, tensors, extra["optimizer_groups"])
    ddp = DistributedDataParallel(model, find_unused_parameters=True) if info.world_size > 1 else None
    # On resume the restored param groups carry "initial_lr", so the schedule continues from the saved step.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps), last_epoch=start - 1)
    history: list[dict[str, float]] = list(extra.get("history", []))
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc="train policy", unit="step", disable=not (cfg.progress and info.is_main),
               initial=start, total=cfg.steps)
    for step in bar:
        idx = torch.randint(len(windows), (cfg.batch_size,), generator=gen)
        obs, fut = windows.obs(idx), windows.obs(windows.future_index(idx))
        if cfg.augment_pixels:
            obs = ObsBatch(random_shift(obs.images, cfg.augment_pixels, gen), obs.state, obs.instructions)
        actions, pad = windows.chunk(idx)
        loss, metrics = (ddp or model)(obs, actions, pad, fut)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        model.update_target()
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step, **metrics})
            bar.set_postfix(flow=f"{metrics['flow']:.3f}", flare=f"{metrics['flare']:.3f}")
        if info.is_main and ((step + 1) % cfg.save_every == 0 or step == cfg.steps - 1):
            _save(model, opt, out, cfg, step + 1, history, time.perf_counter() - t0 + extra.get("train_seconds", 0.0),
                  info.world_size)
    result = {"steps": cfg.steps, "train_seconds": round(time.perf_counter() - t0 + extra.get("train_seconds", 0.0), 1),
              "final": history[-1] if history else {}, "frames": len(store), "out": str(out)}
    if info.is_main:
        (out / "train_log.json").write_text(json.dumps({**result, "history": history}, indent=2))
    return result


def _save(model: FlarePolicy, opt: torch.optim.Optimizer, out: Path, cfg: PolicyTrainConfig, step: int,
          history: list[dict[str, float]], seconds: float, world_size: int) -> None:
    tensors, groups = optimizer_tensors(opt)
    save_checkpoint(model, out, extra={"step": step, "train_config": asdict(cfg), "optimizer_groups": groups,
                                       "history": history, "train_seconds": seconds, "world_size": world_size},
                    tensors=tensors)
