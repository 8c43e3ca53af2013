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

from wm_vla.models.checkpoint import load_checkpoint, load_world_models, save_checkpoint, weights_digest
from wm_vla.models.config import world_model_preset
from wm_vla.models.flare_policy import FlarePolicy, ObsBatch
from wm_vla.models.world_model import AnyWorldModel, LatentWorldModel, WorldModelOutput
from wm_vla.runtime.ranker import DEFAULT_SWITCH_MARGIN
from wm_vla.training.candidate_labels import CandidateSet, load_candidate_set
from wm_vla.training.common import seed_everything
from wm_vla.training.errors import DatasetFeatureError, TrainingConfigError
from wm_vla.training.ranked_states import check_ranked_states, load_ranked_decisions
from wm_vla.training.datasets import FrameStore, Windows, load_frames


@dataclass
class Transitions:
    """(z_t, normalised chunk, z_{t+H}, failure-within-chunk, progress) for every frame of the datasets."""

    z: torch.Tensor
    chunk: torch.Tensor
    z_next: torch.Tensor
    failure: torch.Tensor
    progress: torch.Tensor
    has_next: torch.Tensor  # 1 where z_{t+H} is known (recorded chunks); 0 for labelled candidates that were not run
    windows: list[tuple[Windows, torch.Tensor]] = field(default_factory=list)  # (windows, z of each frame)
    groups: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # labelled candidates: (z, rows)
    # hindsight-relabelled copies of labelled decisions: (rows (M, K), index of the decision in cat(groups' rows))
    hindsight: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    # recorded frames and their hindsight copies: rows (M, 1 + A), the frame under its own instruction first
    instruction_groups: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.z.shape[0])


@torch.no_grad()
def encode_frames(policy: FlarePolicy, windows: Windows, batch: int = 256,
                  idx: torch.Tensor | None = None) -> torch.Tensor:
    """z of every frame (or of the frames `idx`, in that order)."""
    idx = torch.arange(len(windows)) if idx is None else idx
    zs = [policy.encode(windows.obs(idx[i:i + batch]))[2] for i in range(0, len(idx), batch)]
    return torch.cat(zs)


@torch.no_grad()
def encode_candidate_set(policy: FlarePolicy, cands: CandidateSet, batch: int = 256) -> torch.Tensor:
    zs = []
    for i in range(0, len(cands), batch):
        sl = slice(i, min(i + batch, len(cands)))
        zs.append(policy.encode(ObsBatch(cands.images[sl].float() / 255.0, cands.state[sl], cands.instructions[sl]))[2])
    return torch.cat(zs)


def hindsight_dataset_parts(policy: FlarePolicy, store: FrameStore) -> list[tuple[torch.Tensor, ...]]:
    """Transitions of a dataset's hindsight copies: the recorded frames, encoded with another instruction, labelled
    with that instruction's outcome (`FrameStore.hindsight`)."""
    parts = []
    for copy, keep in store.hindsight():
        windows = Windows(copy, policy.cfg.horizon)
        z = encode_frames(policy, windows, idx=keep)
        where = torch.full((len(copy),), -1, dtype=torch.long)
        where[keep] = torch.arange(len(keep))
        chunk, _pad = windows.chunk(keep)
        fail, prog = windows.labels(keep)
        parts.append((z, policy.norm_action(chunk), z[where[windows.future_index(keep)]], fail, prog,
                      torch.ones(len(keep))))
    return parts


def build_transitions(policy: FlarePolicy, datasets: list[str], progress: bool = True,
                      candidates: list[str] | None = None, hindsight: bool = False,
                      hindsight_datasets: bool = False) -> Transitions:
    """Transitions of the recorded datasets, then (if given) every labelled candidate of the label folders, and
    (with `hindsight`) their copies relabelled for the scene's other instructions; `hindsight_datasets` adds the
    recorded datasets' relabelled copies (after each dataset's own transitions)."""
    parts: list[tuple[torch.Tensor, ...]] = []
    all_windows = []
    groups = []
    relabelled = []
    instruction_groups: list[torch.Tensor] = []
    decisions = 0
    pc = policy.cfg
    offset = 0
    for path in datasets:
        store = load_frames(path, policy.cfg.image_size, policy.cfg.cameras, progress=progress)
        windows = Windows(store, policy.cfg.horizon)
        z = encode_frames(policy, windows)
        idx = torch.arange(len(windows))
        chunk, _pad = windows.chunk(idx)
        fail, prog = windows.labels(idx)
        parts.append((z, policy.norm_action(chunk), z[windows.future_index(idx)], fail, prog, torch.ones(len(idx))))
        all_windows.append((windows, z))
        offset += len(idx)
        if hindsight_datasets:
            if not store.relabels:
                raise DatasetFeatureError(f"{path}: no hindsight labels to train on (collect it with `wm-vla sim "
                                          "collect` without --no-hindsight, or drop --hindsight-datasets)")
            rows = [offset - len(idx) + idx]  # the frames' own rows, then each copy's row of the same frame
            for copy_part, keep in zip(hindsight_dataset_parts(policy, store), (k for _c, k in store.hindsight())):
                parts.append(copy_part)
                row = torch.full((len(idx),), -1, dtype=torch.long)
                row[keep] = offset + torch.arange(len(keep))
                rows.append(row)
                offset += len(keep)
            stacked = torch.stack(rows, 1)
            instruction_groups.append(stacked[(stacked >= 0).all(1)])
    for path in candidates or []:
        cands = load_candidate_set(path, pc.cameras, pc.image_size, pc.horizon, pc.action_dim, pc.state_dim)
        n, k = len(cands), cands.k
        for copy, labels in enumerate([cands, *(cands.hindsight() if hindsight else [])]):
            z = encode_candidate_set(policy, labels)
            rows = offset + torch.arange(n * k).reshape(n, k)
            parts.append((z.repeat_interleave(k, 0), policy.norm_action(labels.chunks.flatten(0, 1)),
                          torch.zeros(n * k, z.shape[1]), labels.failure.flatten().float(), labels.value().flatten(),
                          torch.zeros(n * k)))
            if copy == 0:
                groups.append((z, rows))
            else:
                relabelled.append((rows, decisions + torch.arange(n)))
            offset += n * k
        decisions += n
    if not parts:
        raise DatasetFeatureError("no training data: give at least one --dataset or --candidates folder")
    cat = [torch.cat(p) for p in zip(*parts)]
    return Transitions(*cat, windows=all_windows, groups=groups, hindsight=relabelled,
                       instruction_groups=torch.cat(instruction_groups) if instruction_groups else None)


def wm_loss(out: WorldModelOutput, z_next: torch.Tensor, failure: torch.Tensor, progress: torch.Tensor,
            z_scale: torch.Tensor, has_next: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    per_row = (((out.next_latent - z_next) / z_scale) ** 2).mean(1)
    if has_next is None:
        latent = per_row.mean()
    else:
        latent = (per_row * has_next).sum() / has_next.sum().clamp_min(1.0)
    fail = F.binary_cross_entropy_with_logits(out.failure_logit, failure)
    prog = F.mse_loss(out.progress, progress)
    total = latent + fail + 5.0 * prog
    return total, {"loss": float(total.detach()), "latent": float(latent.detach()), "failure_bce": float(fail.detach()),
                   "progress_mse": float(prog.detach())}


def true_scores(data: Transitions, rows: torch.Tensor) -> torch.Tensor:
    """Oracle order of labelled candidates: failure (-1) < any progress in [0, 1) < success (1)."""
    return torch.where(data.failure[rows] > 0.5, -torch.ones_like(data.progress[rows]), data.progress[rows])


def group_scores(model: AnyWorldModel, z: torch.Tensor, chunk: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The ranker's score (progress - failure probability) of the rows `rows` (G, K) of (z, chunk), shaped (G, K)."""
    out = model(z[rows.flatten()], chunk[rows.flatten()])
    return (out.progress - out.failure_prob).reshape(rows.shape)


def listwise_kl(score: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(target / T) || softmax(score / T)) over each group (dim 1)."""
    return F.kl_div(F.log_softmax(score / temperature, dim=1), F.softmax(target / temperature, dim=1),
                    reduction="batchmean")


def listwise_true_outcome_loss(model: LatentWorldModel, data: Transitions, rows: torch.Tensor,
                               temperature: float) -> torch.Tensor:
    """KL(softmax(true / T) || softmax(score / T)) over each decision's K candidates (rows: (G, K))."""
    return listwise_kl(group_scores(model, data.z, data.chunk, rows), true_scores(data, rows), temperature)


@torch.no_grad()
def true_outcome_top1(model: AnyWorldModel, data: Transitions, rows: torch.Tensor) -> float:
    """Fraction of decisions where the model's pick has the best true outcome (ties count as hits)."""
    model.eval()
    picks = group_scores(model, data.z, data.chunk, rows).argmax(1)
    truth = true_scores(data, rows)
    model.train()
    return float((truth.gather(1, picks[:, None])[:, 0] >= truth.max(1).values - 1e-6).float().mean())


@torch.no_grad()
def pick_failure_rates(model: AnyWorldModel, data: Transitions, rows: torch.Tensor) -> tuple[float, float]:
    """(how often the model's pick, how often the policy's first sample) truly fails, over the decisions `rows`.
    Top-1 alone hides which way a ranker errs: a pick that is not the best may still be safe, or walk into a wall."""
    model.eval()
    picks = group_scores(model, data.z, data.chunk, rows).argmax(1)
    failed = data.failure[rows] > 0.5
    model.train()
    return float(failed.gather(1, picks[:, None]).float().mean()), float(failed[:, 0].float().mean())


def ranking_outlook(validation: dict[str, float]) -> str | None:
    """One line on whether ranking with this world model can be expected to help, from its held-out candidate
    groups: how often its pick has the best true outcome vs how often the policy's first sample has. None without
    labelled candidate groups. In our runs a closed-loop gain came only with a lead here, and a lead alone was not
    enough (the labels' horizon may end before a later failure)."""
    model, first = validation.get("top1_true_outcome_heldout"), validation.get("top1_true_outcome_first_candidate")
    if model is None or first is None:
        return None
    line = (f"held-out decisions: the world model's pick has the best true outcome in {model:.0%}, "
            f"the policy's first sample in {first:.0%}")
    if model <= first:
        line += " -> ranking with it is unlikely to beat the single sample (more or better labels needed)"
    else:
        line += f" (+{model - first:.0%})"
    pick_fails = validation.get("failure_rate_pick_heldout")
    if pick_fails is not None:
        line += (f"; its pick fails in {pick_fails:.0%}, the first sample in "
                 f"{validation.get('failure_rate_first_candidate', float('nan')):.0%}")
    relabelled = validation.get("top1_true_outcome_heldout_relabelled")
    if relabelled is not None:  # does it follow the instruction? the same scenes, asked for the other colours
        line += (f"; asked for another target: {relabelled:.0%} vs first sample "
                 f"{validation.get('top1_true_outcome_first_candidate_relabelled', float('nan')):.0%}")
    return line


@dataclass
class DecisionSplit:
    """Labelled decisions split into training and held-out ones; relabelled copies follow their decision."""

    train_rows: torch.Tensor        # (G_train, K) candidate rows: training decisions and their relabelled copies
    held_rows: torch.Tensor         # (G_held, K) the held-out decisions as labelled (their actual instruction)
    held_relabelled: torch.Tensor   # (M, K) the held-out decisions' relabelled copies


def split_decisions(data: Transitions, val_fraction: float, gen: torch.Generator) -> DecisionSplit | None:
    """Hold out `val_fraction` of the labelled decisions; None without labels (or with mixed K)."""
    if not data.groups or len({int(r.shape[1]) for _, r in data.groups}) != 1:
        return None
    group_rows = torch.cat([r for _, r in data.groups])
    k = int(group_rows.shape[1])
    train_groups, val_groups = _split(len(group_rows), val_fraction, gen)
    if len(train_groups) == 0:  # too few decisions to hold any out
        train_groups, val_groups = val_groups, val_groups[:0]
    rows = torch.cat([r for r, _ in data.hindsight]) if data.hindsight else torch.zeros(0, k, dtype=torch.long)
    decision = torch.cat([d for _, d in data.hindsight]) if data.hindsight else torch.zeros(0, dtype=torch.long)
    held = torch.isin(decision, val_groups)
    return DecisionSplit(torch.cat([group_rows[train_groups], rows[~held]]), group_rows[val_groups], rows[held])


@dataclass
class WorldModelTrainConfig:
    datasets: list[str]
    policy: str
    out: str
    candidates: list[str] = field(default_factory=list)  # `wm-vla sim label-candidates` folders
    role: str = "teacher"
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    # seed of the train / held-out split (None: `seed`); the same for every member of an ensemble trained with
    # different `seed`s, so that all of them (and the ensemble) are validated on decisions none of them saw
    split_seed: int | None = None
    val_fraction: float = 0.1
    rank_weight: float = 1.0        # listwise loss on labelled candidate groups (their true outcome order)
    rank_temperature: float = 0.1
    # also train on the labels' hindsight-relabelled copies (other instructions); off: in our runs it made the
    # ranking worse, the policy's latent does not carry which cube the instruction names (docs/results.md, issue #3)
    hindsight: bool = False
    # also train on the recorded datasets' hindsight copies (each frame labelled for the other instructions)
    hindsight_datasets: bool = False
    # with hindsight_datasets: listwise loss over each recorded frame's instructions (own vs relabelled), the same
    # chunk scored under every colour word; a pointwise fit alone does not learn to tell them apart (docs/results.md)
    instruction_rank_weight: float = 1.0
    progress: bool = True


def split_instruction_groups(data: Transitions, val_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Instruction groups with no held-out row (for training) and those whose own row is held out."""
    if data.instruction_groups is None:
        empty = torch.zeros(0, 1, dtype=torch.long)
        return empty, empty
    held = torch.zeros(len(data), dtype=torch.bool)
    held[val_idx] = True
    groups = data.instruction_groups
    return groups[~held[groups].any(1)], groups[held[groups[:, 0]]]


def validation_split(data: Transitions, val_fraction: float, gen: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor, DecisionSplit | None]:
    """The world model's (training rows, held-out rows, labelled-decision split), in the generator's first draws:
    a generator seeded like `train_world_model`'s split reproduces its held-out decisions."""
    train_idx, val_idx = _split(len(data), val_fraction, gen)
    return train_idx, val_idx, split_decisions(data, val_fraction, gen)


def _split(n: int, val_fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, int(n * val_fraction))
    return perm[n_val:], perm[:n_val]


@torch.no_grad()
def evaluate_wm(model: LatentWorldModel, data: Transitions, idx: torch.Tensor, z_scale: torch.Tensor) -> dict[str, float]:
    model.eval()
    out = model(data.z[idx], data.chunk[idx])
    _, metrics = wm_loss(out, data.z_next[idx], data.failure[idx], data.progress[idx], z_scale, data.has_next[idx])
    pred_fail = out.failure_prob > 0.5
    metrics["failure_accuracy"] = float((pred_fail == (data.failure[idx] > 0.5)).float().mean())
    known = data.has_next[idx] > 0
    metrics["latent_cosine"] = float(F.cosine_similarity(out.next_latent[known], data.z_next[idx][known]).mean())
    model.train()
    return metrics


def train_world_model(cfg: WorldModelTrainConfig) -> dict[str, Any]:
    gen = seed_everything(cfg.seed)
    policy, _, _ = load_checkpoint(Path(cfg.policy), expect="policy")
    assert isinstance(policy, FlarePolicy)
    t0 = time.perf_counter()
    data = build_transitions(policy, cfg.datasets, cfg.progress, cfg.candidates, cfg.hindsight,
                             cfg.hindsight_datasets)
    pc = policy.cfg
    model = LatentWorldModel(world_model_preset(cfg.role, latent_dim=pc.latent_dim, action_dim=pc.action_dim,
                                                horizon=pc.horizon))
    known = data.has_next > 0
    z_scale = data.z_next[known].std(0).clamp_min(1e-3) if int(known.sum()) > 1 else torch.ones(data.z.shape[1])
    split_gen = gen if cfg.split_seed is None else torch.Generator().manual_seed(cfg.split_seed)
    train_idx, val_idx, split = validation_split(data, cfg.val_fraction, split_gen)
    if split is not None:  # hold out whole decisions (all their candidates, every relabelled copy) from training
        held = set(split.held_rows.flatten().tolist()) | set(split.held_relabelled.flatten().tolist())
        if held:
            train_idx = torch.tensor([i for i in train_idx.tolist() if i not in held], dtype=torch.long)
            val_idx = torch.cat([val_idx, torch.tensor(sorted(held), dtype=torch.long)]).unique()
    train_instr, held_instr = split_instruction_groups(data, val_idx)
    if len(held_instr):  # a held-out frame keeps every instruction's row out of training
        train_idx = train_idx[~torch.isin(train_idx, held_instr.flatten())]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr * 0.05)
    history = []
    for step in tqdm(range(cfg.steps), desc=f"train world model ({cfg.role})", unit="step", disable=not cfg.progress):
        idx = train_idx[torch.randint(len(train_idx), (cfg.batch_size,), generator=gen)]
        out = model(data.z[idx], data.chunk[idx])
        loss, metrics = wm_loss(out, data.z_next[idx], data.failure[idx], data.progress[idx], z_scale, data.has_next[idx])
        if split is not None and cfg.rank_weight > 0:
            rows = split.train_rows[torch.randint(len(split.train_rows), (32,), generator=gen)]
            listwise = listwise_true_outcome_loss(model, data, rows, cfg.rank_temperature)
            loss = loss + cfg.rank_weight * listwise
            metrics["listwise"] = float(listwise.detach())
        if len(train_instr) and cfg.instruction_rank_weight > 0:
            rows = train_instr[torch.randint(len(train_instr), (32,), generator=gen)]
            by_instruction = listwise_true_outcome_loss(model, data, rows, cfg.rank_temperature)
            loss = loss + cfg.instruction_rank_weight * by_instruction
            metrics["listwise_instruction"] = float(by_instruction.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == cfg.steps - 1:
            history.append({"step": step, **metrics})
    val = evaluate_wm(model, data, val_idx, z_scale)
    if split is not None and len(split.held_rows):  # how often the pick has the best true outcome, vs candidate 0
        truth = true_scores(data, split.held_rows)
        val["top1_true_outcome_heldout"] = true_outcome_top1(model, data, split.held_rows)
        val["top1_true_outcome_first_candidate"] = float((truth[:, 0] >= truth.max(1).values - 1e-6).float().mean())
        val["failure_rate_pick_heldout"], val["failure_rate_first_candidate"] = pick_failure_rates(
            model, data, split.held_rows)
        if len(split.held_relabelled):  # the same held-out decisions, asked for the scene's other instructions
            truth = true_scores(data, split.held_relabelled)
            val["top1_true_outcome_heldout_relabelled"] = true_outcome_top1(model, data, split.held_relabelled)
            val["top1_true_outcome_first_candidate_relabelled"] = float(
                (truth[:, 0] >= truth.max(1).values - 1e-6).float().mean())
    truth = true_scores(data, held_instr) if len(held_instr) else torch.zeros(0, 1)
    own_best = held_instr[truth[:, 0] > truth[:, 1:].max(1).values] if truth.shape[1] > 1 else held_instr[:0]
    if len(own_best):  # held-out frames where only the own instruction's outcome is best: is it scored highest?
        val["top1_own_instruction_heldout"] = true_outcome_top1(model, data, own_best)
    seconds = time.perf_counter() - t0
    save_checkpoint(model.eval(), Path(cfg.out), extra={"policy": str(cfg.policy),
                                                        "encoder_digest": weights_digest(cfg.policy), "train_config": asdict(cfg),
                                                        "validation": val, "train_seconds": seconds, "history": history},
                    tensors={"z_scale": z_scale})
    result = {"role": cfg.role, "transitions": len(data), "validation": val, "train_seconds": round(seconds, 1), "out": cfg.out}
    (Path(cfg.out) / "train_log.json").write_text(json.dumps({**result, "history": history}, indent=2))
    return result


def margin_picks(score: torch.Tensor, margin: float) -> torch.Tensor:
    """The ranker's choice per group (G, K): the best candidate if it beats the first (the policy's own sample) by
    more than `margin`, else the first (`score_candidates`' switch rule, without the kinematic penalties)."""
    best = score.argmax(1)
    gain = score.gather(1, best[:, None])[:, 0] - score[:, 0]
    return torch.where(gain > margin, best, torch.zeros_like(best))


def decision_slack(score: torch.Tensor, margin: float) -> torch.Tensor:
    """How far each group's `margin_picks` decision (G, K scores) is from another: for a kept first sample, what the
    best candidate lacks of beating it by the margin; for a switch, the lesser of its excess over the margin and its
    lead over the runner-up. A student whose score gains err by more than this can take the other decision."""
    best = score.argmax(1)
    gain = score.gather(1, best[:, None])[:, 0] - score[:, 0]
    if score.shape[1] < 2:
        return margin - gain
    top2 = score.topk(2, dim=1).values
    return torch.where(gain > margin, torch.minimum(gain - margin, top2[:, 0] - top2[:, 1]), margin - gain)


def with_switch_bonus(score: torch.Tensor, margin: float) -> torch.Tensor:
    """Scores (G, K) with `margin` added to each group's first candidate: their argmax is `margin_picks`' choice (ties
    aside), so a listwise loss on them is a loss on the ranker's decision rather than on the plain order."""
    return torch.cat([score[:, :1] + margin, score[:, 1:]], dim=1)


def relative_score_loss(score: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean squared error of each candidate's score gain over the group's first candidate, in units of the switch
    margin: what the margin rule compares, so an error of one margin costs 1."""
    gain = score - score[:, :1]
    target_gain = target - target[:, :1]
    return (((gain - target_gain) / margin) ** 2).mean()


@torch.no_grad()
def top1_agreement(student: LatentWorldModel, cz: torch.Tensor, cc: torch.Tensor, teacher_score: torch.Tensor,
                   groups: torch.Tensor, k: int, margin: float | None = None) -> float:
    """Fraction of candidate groups (states) where the student's pick is the teacher's pick: the plain argmax, or
    with `margin` both picks under the ranker's switch rule (`margin_picks`)."""
    rows = groups[:, None] * k + torch.arange(k)[None]
    student_score, target = group_scores(student, cz, cc, rows), teacher_score[groups]
    if margin is None:
        return float((student_score.argmax(1) == target.argmax(1)).float().mean())
    return float((margin_picks(student_score, margin) == margin_picks(target, margin)).float().mean())


@torch.no_grad()
def sample_candidates(policy: FlarePolicy, data: Transitions, states: int, k: int, gen: torch.Generator,
                      progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """K policy candidates (normalised) at `states` random dataset states, with the states' latents repeated."""
    cand_z, cand_chunks = [], []
    states_left = states
    with tqdm(total=states, desc="policy candidates", unit="state", disable=not progress) as bar:
        while states_left > 0:
            windows, zs = data.windows[int(torch.randint(len(data.windows), (1,), generator=gen))]
            n = min(32, states_left)
            idx = torch.randint(len(windows), (n,), generator=gen)
            actions, _z, _f, _noise = policy.sample_many(windows.obs(idx), k, generator=gen)
            cand_z.append(zs[idx].repeat_interleave(k, 0))
            cand_chunks.append(policy.norm_action(actions.flatten(0, 1)))
            states_left -= n
            bar.update(n)
    return torch.cat(cand_z), torch.cat(cand_chunks)


@torch.no_grad()
def teacher_instruction_groups(teacher: AnyWorldModel, data: Transitions, gen: torch.Generator,
                               held_fraction: float = 0.1,
                               ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The recorded frames' instruction groups split into training / held-out ones, with the teacher's scores of
    each ((train scores, held scores)); empty without `hindsight_datasets`."""
    if data.instruction_groups is None or len(data.instruction_groups) == 0:
        empty, none = torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1)
        return empty, empty, (none, none)
    groups = data.instruction_groups
    score = group_scores(teacher, data.z, data.chunk, groups)
    train, held = _split(len(groups), held_fraction, gen)
    return groups[train], groups[held], (score[train], score[held])


@torch.no_grad()
def instruction_agreement(student: LatentWorldModel, data: Transitions, groups: torch.Tensor,
                          teacher_score: torch.Tensor) -> float:
    """Fraction of instruction groups where the student's highest-scored instruction is the teacher's."""
    picks = group_scores(student, data.z, data.chunk, groups).argmax(1)
    return float((picks == teacher_score.argmax(1)).float().mean())


NEAR_TIE_SHARE = 0.2  # a teacher decision within this share of the switch margin of another is a near-tie


@dataclass
class DistillConfig:
    datasets: list[str]
    policy: str
    teacher: str | list[str]   # several: distil from their ensemble (mean prediction)
    out: str
    candidates: list[str] = field(default_factory=list)  # label folders: distil on these states' candidates
    states: int = 1500         # dataset states at which the policy proposes candidates
    k: int = 8                 # candidates per state
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    rank_weight: float = 1.0         # listwise KL between teacher and student softmax over each state's K scores
    rank_temperature: float = 0.05
    ground_truth_weight: float = 0.5  # pointwise loss on the recorded chunks' true outcomes (pulls away from the teacher)
    # MSE of each candidate's score gain over the state's first candidate, teacher vs student, in switch margins:
    # the quantity the ranker's switch rule reads (0: off)
    relative_weight: float = 0.0
    # listwise KL of the scores with the switch margin added to the first candidate (`with_switch_bonus`): the
    # ranker's decision, first sample kept or which one switched to, as the target (0: off)
    decision_weight: float = 0.0
    switch_margin: float = DEFAULT_SWITCH_MARGIN  # the rule the decision agreement is reported for
    extra_states: int = 0      # with label folders: also distil on K candidates at this many random dataset states
    ranked_states: list[str] = field(default_factory=list)  # `wm-vla train ranked-states` folders: train on these too
    student_hidden: int | None = None   # override the student preset's width / depth
    student_layers: int | None = None
    hindsight: bool = False    # also distil on the label folders' hindsight-relabelled copies (see above)
    hindsight_datasets: bool = False  # ground truth also on the recorded datasets' hindsight copies (see above)
    # with hindsight_datasets: listwise KL to the teacher across each recorded frame's instructions, so the student
    # inherits which colour word the teacher scores highest for a chunk (pointwise ground truth alone averages them)
    instruction_rank_weight: float = 1.0
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        """Refuse settings that cannot train (before anything is loaded or written)."""
        weights = {"rank_weight": self.rank_weight, "ground_truth_weight": self.ground_truth_weight,
                   "relative_weight": self.relative_weight, "decision_weight": self.decision_weight,
                   "instruction_rank_weight": self.instruction_rank_weight, "switch_margin": self.switch_margin}
        bad = {name: value for name, value in weights.items() if not value >= 0.0}  # NaN fails too
        if bad:
            raise TrainingConfigError(f"distillation weights must be >= 0: {bad}")
        if not (self.lr > 0.0 and self.rank_temperature > 0.0 and self.steps >= 1 and self.batch_size >= 1):
            raise TrainingConfigError(f"need lr > 0, rank_temperature > 0, steps >= 1 and batch_size >= 1, got "
                                      f"{self.lr}, {self.rank_temperature}, {self.steps} and {self.batch_size}")
        if self.relative_weight > 0 and self.switch_margin <= 0:
            raise TrainingConfigError("relative_weight measures score gains in switch margins: it needs switch_margin > 0")


@dataclass
class CandidateGroups:
    """States with K candidate chunks each (rows `g * k .. g * k + k - 1` of `z`/`chunk`, the policy's first sample
    first), split into training and held-out groups, with the teacher's outputs once `label` has run."""

    z: torch.Tensor       # (G * K, D) the state's latent, repeated per candidate
    chunk: torch.Tensor   # (G * K, H, A) normalised
    k: int
    train: torch.Tensor   # group indices
    held: torch.Tensor
    soft: WorldModelOutput | None = None
    score: torch.Tensor | None = None  # (G, K) the teacher's ranking score

    def rows(self, groups: torch.Tensor) -> torch.Tensor:
        return (groups[:, None] * self.k + torch.arange(self.k)[None]).reshape(-1)

    def label(self, teacher: AnyWorldModel) -> None:
        self.soft = teacher(self.z, self.chunk)
        self.score = (self.soft.progress - self.soft.failure_prob).reshape(-1, self.k)  # what the ranker compares

    def losses(self, student: LatentWorldModel, groups: torch.Tensor, z_scale: torch.Tensor,
               cfg: DistillConfig) -> dict[str, torch.Tensor]:
        """The student's distillation terms on these groups: pointwise (`distill`), listwise over each group's K
        scores, and, when weighted, on the ranker's decision (`relative_gain`, `listwise_decision`)."""
        assert self.soft is not None and self.score is not None
        i = self.rows(groups)
        out = student(self.z[i], self.chunk[i])
        kd, _ = wm_loss(out, self.soft.next_latent[i], self.soft.failure_prob[i], self.soft.progress[i], z_scale)
        score, target = (out.progress - out.failure_prob).reshape(-1, self.k), self.score[groups]
        terms = {"distill": kd, "listwise_kl": listwise_kl(score, target, cfg.rank_temperature)}
        if cfg.relative_weight > 0:
            terms["relative_gain"] = relative_score_loss(score, target, cfg.switch_margin)
        if cfg.decision_weight > 0:
            terms["listwise_decision"] = listwise_kl(with_switch_bonus(score, cfg.switch_margin),
                                                     with_switch_bonus(target, cfg.switch_margin), cfg.rank_temperature)
        return terms

    @torch.no_grad()
    def agreement(self, student: AnyWorldModel, groups: torch.Tensor, margin: float | None = None) -> float:
        """`top1_agreement` of the student with the teacher on these groups."""
        assert self.score is not None
        return top1_agreement(student, self.z, self.chunk, self.score, groups, self.k, margin)

    @torch.no_grad()
    def near_ties(self, student: AnyWorldModel, groups: torch.Tensor, margin: float) -> dict[str, float]:
        """The share of these groups whose teacher decision is within a fifth of the margin of another
        (`decision_slack`), and the student's decision agreement on the others."""
        assert self.score is not None
        clear = groups[decision_slack(self.score[groups], margin) >= NEAR_TIE_SHARE * margin]
        out = {"near_tie_share": 1.0 - len(clear) / max(1, len(groups))}
        if len(clear):
            out["decision_agreement_clear"] = self.agreement(student, clear, margin)
        return out


def ranked_groups(folders: list[str], latent_policy: str, teacher: AnyWorldModel,
                  held_fraction: float = 0.1) -> CandidateGroups | None:
    """The recorded closed-loop decisions of `wm-vla train ranked-states` folders as groups of their recorded K (the
    ranker's real decisions); the last `held_fraction` of each folder's decisions (whole episodes but one) is held out."""
    if not folders:
        return None
    zs, chunks, train, held, ks = [], [], [], [], set()
    offset = 0
    for folder in folders:
        z, c = load_ranked_decisions(folder, latent_policy, teacher.cfg.latent_dim, teacher.cfg.horizon,
                                     teacher.cfg.action_dim)
        n, k = len(z), int(c.shape[1])
        n_held = int(n * held_fraction)
        ks.add(k)
        zs.append(z.repeat_interleave(k, 0))
        chunks.append(c.flatten(0, 1))
        train.append(torch.arange(offset, offset + n - n_held))
        held.append(torch.arange(offset + n - n_held, offset + n))
        offset += n
    if len(ks) > 1:
        raise DatasetFeatureError(f"ranked-states folders recorded with different K ({sorted(ks)}) cannot be distilled "
                                  "together")
    return CandidateGroups(torch.cat(zs), torch.cat(chunks), ks.pop(), torch.cat(train), torch.cat(held))


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Student <- teacher on policy candidates (soft targets) + ground truth on recorded chunks."""
    cfg.validate()
    gen = seed_everything(cfg.seed)
    policy, _, _ = load_checkpoint(Path(cfg.policy), expect="policy")
    teacher, t_tensors = load_world_models(cfg.teacher)
    for folder in cfg.ranked_states:  # a wrong folder fails now, not after the transitions are built
        check_ranked_states(folder, cfg.policy)
    assert isinstance(policy, FlarePolicy)
    t0 = time.perf_counter()
    data = build_transitions(policy, cfg.datasets, cfg.progress, cfg.candidates, cfg.hindsight,
                             cfg.hindsight_datasets)
    z_scale = t_tensors.get("z_scale", data.z_next.std(0).clamp_min(1e-3))
    split = split_decisions(data, 0.1, gen) if data.groups else None
    if data.groups:  # the policy's candidates at the states its own closed-loop runs visited (label folders)
        if split is None:
            raise DatasetFeatureError("candidate-label folders with different K cannot be distilled together")
        # held out: a tenth of the labelled (closed-loop, on-policy) decisions; relabelled copies and the sampled
        # extra states only train
        rows = torch.cat([split.held_rows, split.held_relabelled, split.train_rows])
        k = int(rows.shape[1])
        cz, cc = data.z[rows.flatten()], data.chunk[rows.flatten()]
        if cfg.extra_states > 0:  # the teacher labels for free: more states -> less student over-fitting
            ez, ec = sample_candidates(policy, data, cfg.extra_states, k, gen, cfg.progress)
            cz, cc = torch.cat([cz, ez]), torch.cat([cc, ec])
        held_out = torch.arange(len(split.held_rows))
        n_held = len(split.held_rows) + len(split.held_relabelled)
        held_relabelled = torch.arange(len(split.held_rows), n_held)
        train_groups = torch.arange(n_held, int(cz.shape[0]) // k)
    else:  # candidates proposed by the policy at random dataset states
        k = cfg.k
        cz, cc = sample_candidates(policy, data, cfg.states, k, gen, cfg.progress)
        held_relabelled = torch.zeros(0, dtype=torch.long)
        perm = torch.randperm(int(cz.shape[0]) // k, generator=gen)
        held_out, train_groups = perm[: max(1, len(perm) // 10)], perm[max(1, len(perm) // 10):]
        if len(train_groups) == 0:
            train_groups = perm
    labelled = CandidateGroups(cz, cc, k, train_groups, held_out)
    ranked = ranked_groups(cfg.ranked_states, cfg.policy, teacher)
    sets = [g for g in (labelled, ranked) if g is not None]
    with torch.no_grad():
        for g in sets:
            g.label(teacher)
    size = {k: v for k, v in (("hidden", cfg.student_hidden), ("layers", cfg.student_layers)) if v is not None}
    student = LatentWorldModel(world_model_preset("student", latent_dim=teacher.cfg.latent_dim,
                                                  action_dim=teacher.cfg.action_dim, horizon=teacher.cfg.horizon, **size))
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr * 0.05)
    instr_train, instr_held, instr_teacher = teacher_instruction_groups(teacher, data, gen)
    history = []
    training = [g for g in sets if len(g.train)]
    if not training:
        raise DatasetFeatureError("no candidate groups left to train on after the held-out split")
    # each set's share of a batch's candidates follows its share of the training candidates
    total = sum(len(g.train) * g.k for g in training)
    per_set = [max(1, round(cfg.batch_size * len(g.train) * g.k / total) // g.k) for g in training]
    for step in tqdm(range(cfg.steps), desc="distill student", unit="step", disable=not cfg.progress):
        picked = [g.train[torch.randint(len(g.train), (n,), generator=gen)] for g, n in zip(training, per_set)]
        j = torch.randint(len(data), (cfg.batch_size // 2,), generator=gen)
        parts = [g.losses(student, groups, z_scale, cfg) for g, groups in zip(training, picked)]
        terms = {name: sum(part[name] for part in parts) / len(parts) for name in parts[0]}
        logged = step % 200 == 0 or step == cfg.steps - 1
        gt = torch.zeros(())
        if cfg.ground_truth_weight > 0 or logged:  # at weight 0 only for the history
            gt_out = student(data.z[j], data.chunk[j])
            gt, _ = wm_loss(gt_out, data.z_next[j], data.failure[j], data.progress[j], z_scale, data.has_next[j])
        loss = (terms["distill"] + cfg.rank_weight * terms["listwise_kl"] + cfg.ground_truth_weight * gt
                + cfg.relative_weight * terms.get("relative_gain", 0.0)
                + cfg.decision_weight * terms.get("listwise_decision", 0.0))
        by_instruction = None
        if len(instr_train) and cfg.instruction_rank_weight > 0:
            i = torch.randint(len(instr_train), (32,), generator=gen)
            by_instruction = listwise_kl(group_scores(student, data.z, data.chunk, instr_train[i]), instr_teacher[0][i],
                                         cfg.rank_temperature)
            loss = loss + cfg.instruction_rank_weight * by_instruction
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if logged:
            history.append({**{name: float(v.detach()) for name, v in terms.items()}, "step": step,
                            "ground_truth": float(gt.detach()),
                            **({} if by_instruction is None else {"listwise_instruction": float(by_instruction.detach())})})
    student.eval()
    train_sample = train_groups[torch.randperm(len(train_groups), generator=gen)[:500]]
    agree_train = labelled.agreement(student, train_sample)
    agree = labelled.agreement(student, held_out)
    decisions = {"decision_agreement_heldout": labelled.agreement(student, held_out, cfg.switch_margin),
                 "decision_agreement_train": labelled.agreement(student, train_sample, cfg.switch_margin)}
    if ranked is not None:  # the recorded closed-loop decisions, K candidates each as the ranker saw them
        r_sample = ranked.train[torch.randperm(len(ranked.train), generator=gen)[:500]]
        decisions.update({"ranked_k": ranked.k, "ranked_heldout_decisions": len(ranked.held)})
        if len(r_sample):
            decisions["ranked_decision_agreement_train"] = ranked.agreement(student, r_sample, cfg.switch_margin)
        if len(ranked.held):  # folders of fewer than ten decisions hold none out
            decisions.update({"ranked_top1_agreement_heldout": ranked.agreement(student, ranked.held),
                              "ranked_decision_agreement_heldout": ranked.agreement(student, ranked.held,
                                                                                    cfg.switch_margin)})
            decisions.update({f"ranked_heldout_{name}": value
                              for name, value in ranked.near_ties(student, ranked.held, cfg.switch_margin).items()})
    relabelled = {"top1_agreement_heldout_relabelled": labelled.agreement(student, held_relabelled)
                  } if len(held_relabelled) else {}
    if len(instr_held):  # held-out frames: does the student score the same instruction highest as the teacher?
        relabelled["top1_instruction_agreement_heldout"] = instruction_agreement(student, data, instr_held,
                                                                                 instr_teacher[1])
    seconds = time.perf_counter() - t0
    save_checkpoint(student, Path(cfg.out), extra={"policy": str(cfg.policy),
                                                          "encoder_digest": weights_digest(cfg.policy), "teacher": cfg.teacher if isinstance(cfg.teacher, list) else str(cfg.teacher),
                                                          "train_config": asdict(cfg), "train_seconds": seconds,
                                                          "top1_agreement_heldout": agree,
                                                          "top1_agreement_train": agree_train, **decisions,
                                                          **relabelled,
                                                          "history": history},
                    tensors={"z_scale": z_scale})
    result = {"candidates": sum(len(g.z) for g in sets), "heldout_states": len(held_out), "top1_agreement_heldout": agree,
              "top1_agreement_train": agree_train, **decisions, **relabelled, "train_seconds": round(seconds, 1),
              "out": cfg.out}
    (Path(cfg.out) / "train_log.json").write_text(json.dumps({**result, "history": history}, indent=2))
    return result
