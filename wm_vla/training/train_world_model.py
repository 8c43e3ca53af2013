"""`wm-vla train world-model` and `wm-vla train distill`: latent dynamics + progress/failure heads.

The latent space is the (frozen) policy encoder's: z_t = encoder(obs_t). The teacher learns
(z_t, chunk_t) -> (z_{t+H}, progress, failure) from demonstrations AND perturbed rollouts. The student is
distilled from the teacher on policy-sampled candidates (plus ground truth on the recorded chunks).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from wm_vla.models.checkpoint import load_checkpoint, save_checkpoint
from wm_vla.models.config import world_model_preset
from wm_vla.models.flare_policy import FlarePolicy
from wm_vla.models.world_model import LatentWorldModel, WorldModelOutput
from wm_vla.training.common import seed_everything
from wm_vla.training.datasets import Windows, load_frames


@dataclass
class Transitions:
    """(z_t, normalised chunk, z_{t+H}, failure-within-chunk, progress) for every frame of the datasets."""

    z: torch.Tensor
    chunk: torch.Tensor
    z_next: torch.Tensor
    failure: torch.Tensor
    progress: torch.Tensor
    windows: list[tuple[Windows, torch.Tensor]] = field(default_factory=list)  # (windows, z of each frame)

    def __len__(self) -> int:
        return int(self.z.shape[0])


@torch.no_grad()
def encode_frames(policy: FlarePolicy, windows: Windows, batch: int = 256) -> torch.Tensor:
    zs = [policy.encode(windows.obs(torch.arange(i, min(i + batch, len(windows)))))[2] for i in range(0, len(windows), batch)]
    return torch.cat(zs)


def build_transitions(policy: FlarePolicy, datasets: list[str], progress: bool = True) -> Transitions:
    parts: list[tuple[torch.Tensor, ...]] = []
    all_windows = []
    for path in datasets:
        store = load_frames(path, policy.cfg.image_size, policy.cfg.cameras, progress=progress)
        windows = Windows(store, policy.cfg.horizon)
        z = encode_frames(policy, windows)
        idx = torch.arange(len(windows))
        chunk, _pad = windows.chunk(idx)
        fail, prog = windows.labels(idx)
        parts.append((z, policy.norm_action(chunk), z[windows.future_index(idx)], fail, prog))
        all_windows.append((windows, z))
    cat = [torch.cat(p) for p in zip(*parts)]
    return Transitions(*cat, windows=all_windows)


def wm_loss(out: WorldModelOutput, z_next: torch.Tensor, failure: torch.Tensor, progress: torch.Tensor,
            z_scale: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    latent = (((out.next_latent - z_next) / z_scale) ** 2).mean()
    fail = F.binary_cross_entropy_with_logits(out.failure_logit, failure)
    prog = F.mse_loss(out.progress, progress)
    total = latent + fail + 5.0 * prog
    return total, {"loss": float(total.detach()), "latent": float(latent.detach()), "failure_bce": float(fail.detach()),
                   "progress_mse": float(prog.detach())}


@dataclass
class WorldModelTrainConfig:
    datasets: list[str]
    policy: str
    out: str
    role: str = "teacher"
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.1
    progress: bool = True


def _split(n: int, val_fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, int(n * val_fraction))
    return perm[n_val:], perm[:n_val]


@torch.no_grad()
def evaluate_wm(model: LatentWorldModel, data: Transitions, idx: torch.Tensor, z_scale: torch.Tensor) -> dict[str, float]:
    model.eval()
    out = model(data.z[idx], data.chunk[idx])
    _, metrics = wm_loss(out, data.z_next[idx], data.failure[idx], data.progress[idx], z_scale)
    pred_fail = out.failure_prob > 0.5
    metrics["failure_accuracy"] = float((pred_fail == (data.failure[idx] > 0.5)).float().mean())
    metrics["latent_cosine"] = float(F.cosine_similarity(out.next_latent, data.z_next[idx]).mean())
    model.train()
    return metrics


def train_world_model(cfg: WorldModelTrainConfig) -> dict[str, Any]:
    gen = seed_everything(cfg.seed)
    policy, _, _ = load_checkpoint(Path(cfg.policy), expect="policy")
    assert isinstance(policy, FlarePolicy)
    t0 = time.perf_counter()
    data = build_transitions(policy, cfg.datasets, cfg.progress)
    pc = policy.cfg
    model = LatentWorldModel(world_model_preset(cfg.role, latent_dim=pc.latent_dim, action_dim=pc.action_dim,
                                                horizon=pc.horizon))
    z_scale = data.z_next.std(0).clamp_min(1e-3)
    train_idx, val_idx = _split(len(data), cfg.val_fraction, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr * 0.05)
    history = []
    for step in tqdm(range(cfg.steps), desc=f"train world model ({cfg.role})", unit="step", disable=not cfg.progress):
        idx = train_idx[torch.randint(len(train_idx), (cfg.batch_size,), generator=gen)]
        out = model(data.z[idx], data.chunk[idx])
        loss, metrics = wm_loss(out, data.z_next[idx], data.failure[idx], data.progress[idx], z_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == cfg.steps - 1:
            history.append({"step": step, **metrics})
    val = evaluate_wm(model, data, val_idx, z_scale)
    seconds = time.perf_counter() - t0
    save_checkpoint(model.eval(), Path(cfg.out), extra={"policy": str(cfg.policy), "train_config": asdict(cfg),
                                                        "validation": val, "train_seconds": seconds, "history": history},
                    tensors={"z_scale": z_scale})
    result = {"role": cfg.role, "transitions": len(data), "validation": val, "train_seconds": round(seconds, 1), "out": cfg.out}
    (Path(cfg.out) / "train_log.json").write_text(json.dumps({**result, "history": history}, indent=2))
    return result


@dataclass
class DistillConfig:
    datasets: list[str]
    policy: str
    teacher: str
    out: str
    states: int = 1500         # dataset states at which the policy proposes candidates
    k: int = 8                 # candidates per state
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    rank_weight: float = 1.0         # listwise KL between teacher and student softmax over each state's K scores
    rank_temperature: float = 0.05
    seed: int = 0
    progress: bool = True


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Student <- teacher on policy candidates (soft targets) + ground truth on recorded chunks."""
    gen = seed_everything(cfg.seed)
    policy, _, _ = load_checkpoint(Path(cfg.policy), expect="policy")
    teacher, _, t_tensors = load_checkpoint(Path(cfg.teacher), expect="world_model")
    assert isinstance(policy, FlarePolicy) and isinstance(teacher, LatentWorldModel)
    t0 = time.perf_counter()
    data = build_transitions(policy, cfg.datasets, cfg.progress)
    z_scale = t_tensors.get("z_scale", data.z_next.std(0).clamp_min(1e-3))
    # candidates proposed by the policy at random dataset states
    cand_z, cand_chunks = [], []
    per_batch = 32
    states_left = cfg.states
    with torch.no_grad(), tqdm(total=cfg.states, desc="policy candidates", unit="state", disable=not cfg.progress) as bar:
        while states_left > 0:
            windows, zs = data.windows[int(torch.randint(len(data.windows), (1,), generator=gen))]
            n = min(per_batch, states_left)
            idx = torch.randint(len(windows), (n,), generator=gen)
            actions, _z, _f, _noise = policy.sample_many(windows.obs(idx), cfg.k, generator=gen)
            cand_z.append(zs[idx].repeat_interleave(cfg.k, 0))
            cand_chunks.append(policy.norm_action(actions.flatten(0, 1)))
            states_left -= n
            bar.update(n)
    cz, cc = torch.cat(cand_z), torch.cat(cand_chunks)
    with torch.no_grad():
        soft = teacher(cz, cc)
    student = LatentWorldModel(world_model_preset("student", latent_dim=teacher.cfg.latent_dim,
                                                  action_dim=teacher.cfg.action_dim, horizon=teacher.cfg.horizon))
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr * 0.05)
    history = []
    teacher_score = (soft.progress - soft.failure_prob).reshape(-1, cfg.k)  # what the ranker compares, per state
    states_per_batch = max(1, cfg.batch_size // cfg.k)
    for step in tqdm(range(cfg.steps), desc="distill student", unit="step", disable=not cfg.progress):
        s_idx = torch.randint(teacher_score.shape[0], (states_per_batch,), generator=gen)
        i = (s_idx[:, None] * cfg.k + torch.arange(cfg.k)[None]).reshape(-1)  # all K candidates of each state
        j = torch.randint(len(data), (cfg.batch_size // 2,), generator=gen)
        out = student(cz[i], cc[i])
        kd, kd_m = wm_loss(out, soft.next_latent[i], soft.failure_prob[i], soft.progress[i], z_scale)
        student_score = (out.progress - out.failure_prob).reshape(-1, cfg.k)
        listwise = F.kl_div(F.log_softmax(student_score / cfg.rank_temperature, dim=1),
                            F.softmax(teacher_score[s_idx] / cfg.rank_temperature, dim=1), reduction="batchmean")
        gt_out = student(data.z[j], data.chunk[j])
        gt, _ = wm_loss(gt_out, data.z_next[j], data.failure[j], data.progress[j], z_scale)
        loss = kd + cfg.rank_weight * listwise + 0.5 * gt
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "distill": kd_m["loss"], "listwise_kl": float(listwise.detach()),
                            "ground_truth": float(gt.detach())})
    with torch.no_grad():  # top-1 agreement of the ranking decision on (training-set) candidate groups
        groups = torch.randperm(teacher_score.shape[0], generator=gen)[:500]
        rows = (groups[:, None] * cfg.k + torch.arange(cfg.k)[None]).reshape(-1)
        s_out = student(cz[rows], cc[rows])
        agree = float(((s_out.progress - s_out.failure_prob).reshape(-1, cfg.k).argmax(1)
                       == teacher_score[groups].argmax(1)).float().mean())
    seconds = time.perf_counter() - t0
    save_checkpoint(student.eval(), Path(cfg.out), extra={"policy": str(cfg.policy), "teacher": str(cfg.teacher),
                                                          "train_config": asdict(cfg), "train_seconds": seconds,
                                                          "top1_agreement_train": agree, "history": history},
                    tensors={"z_scale": z_scale})
    result = {"candidates": len(cz), "top1_agreement_train": agree, "train_seconds": round(seconds, 1),
              "out": cfg.out}
    (Path(cfg.out) / "train_log.json").write_text(json.dumps({**result, "history": history}, indent=2))
    return result
