"""Student vs teacher world model: batched rollout speed (ratio measured in one run) and top-1 ranking agreement.

Agreement is measured on real ranking decisions: at held-out dataset states the policy proposes K candidates,
both world models rank them with the same GPC-RANK score, and we count how often they pick the same one. Because
many decisions are near-ties for the teacher itself, it also reports agreement by the teacher's own top-1 vs top-2
score gap, and the student's regret (teacher best score minus the teacher's score of the student's pick).

    python benchmarks/wm_student_vs_teacher.py --policy P --teacher T --student S --dataset D [--k 16] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wm_vla.models.checkpoint import load_checkpoint
from wm_vla.runtime.ranker import GpcRanker, RankerConfig
from wm_vla.training.datasets import Windows, load_frames


def time_rollout(model: torch.nn.Module, z: torch.Tensor, chunks: torch.Tensor, repeats: int) -> float:
    """Median milliseconds of one batched rollout of all candidates."""
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(z, chunks)
            times.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--dataset", required=True, help="held-out LeRobot dataset for the ranking decisions")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--decisions", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--switch-margin", type=float, default=0.0, help="ranker keeps candidate 0 unless another is this much better")
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    policy, _, _ = load_checkpoint(Path(args.policy), expect="policy")
    teacher, _, _ = load_checkpoint(Path(args.teacher), expect="world_model")
    student, _, _ = load_checkpoint(Path(args.student), expect="world_model")
    store = load_frames(args.dataset, policy.cfg.image_size, policy.cfg.cameras)
    windows = Windows(store, policy.cfg.horizon)
    gen = torch.Generator().manual_seed(args.seed)
    ranker_cfg = RankerConfig(switch_margin=args.switch_margin)
    rank_t = GpcRanker(teacher, policy.action_mean, policy.action_std, config=ranker_cfg)
    rank_s = GpcRanker(student, policy.action_mean, policy.action_std, config=ranker_cfg)
    agree = 0
    gaps, regrets, hits = [], [], []
    idx_all = torch.randint(len(windows), (args.decisions,), generator=gen)
    for start in range(0, args.decisions, 16):
        idx = idx_all[start:start + 16]
        actions, z, _f, _n = policy.sample_many(windows.obs(idx), args.k, generator=gen)
        for i in range(len(idx)):
            rt, rs = rank_t.rank(z[i], actions[i]), rank_s.rank(z[i], actions[i])
            agree += int(rt.chosen == rs.chosen)
            top2 = np.sort(rt.scores)[-2:]
            gaps.append(float(top2[1] - top2[0]))
            regrets.append(float(rt.scores[rt.chosen] - rt.scores[rs.chosen]))
            hits.append(rt.chosen == rs.chosen)
    gap_a, hit_a, regret_a = np.array(gaps), np.array(hits), np.array(regrets)
    by_gap = {f"gap>{g}": {"fraction": round(float((gap_a > g).mean()), 3),
                           "agreement": round(float(hit_a[gap_a > g].mean()), 3) if (gap_a > g).any() else None}
              for g in (0.0, 0.01, 0.02, 0.05, 0.1)}
    within = {f"regret<={e}": round(float((regret_a <= e).mean()), 3) for e in (0.01, 0.02, 0.05)}
    rows = {}
    for k in (1, 4, 16, 64):
        zk = torch.randn(k, teacher.cfg.latent_dim)
        ck = torch.randn(k, teacher.cfg.horizon, teacher.cfg.action_dim)
        t_ms, s_ms = time_rollout(teacher, zk, ck, args.repeats), time_rollout(student, zk, ck, args.repeats)
        rows[k] = {"teacher_ms": round(t_ms, 4), "student_ms": round(s_ms, 4), "speedup": round(t_ms / s_ms, 2)}
    result = {
        "threads": torch.get_num_threads(), "k_for_agreement": args.k, "decisions": args.decisions,
        "switch_margin": args.switch_margin,
        "top1_agreement": agree / args.decisions,
        "teacher_gap_quantiles": {str(q): round(float(np.quantile(gap_a, q)), 4) for q in (0.25, 0.5, 0.75)},
        "agreement_by_teacher_gap": by_gap, "student_pick_within_teacher_best": within,
        "params": {"teacher": sum(p.numel() for p in teacher.parameters()), "student": sum(p.numel() for p in student.parameters())},
        "rollout_ms_by_k": rows,
    }
    print(f"top-1 agreement (teacher vs student choice, K={args.k}, {args.decisions} decisions, switch margin "
          f"{args.switch_margin}): {result['top1_agreement']:.3f}")
    print(f"teacher top-1 vs top-2 gap quantiles (25/50/75%): {result['teacher_gap_quantiles']}")
    for name, row in by_gap.items():
        print(f"  decisions with teacher {name}: {100 * row['fraction']:.0f}%, agreement {row['agreement']}")
    print("student pick within the teacher's best score: " + ", ".join(f"{k} {v:.3f}" for k, v in within.items()))
    print(f"{'K':>4} {'teacher ms':>11} {'student ms':>11} {'speedup':>8}")
    for k, r in rows.items():
        print(f"{k:>4} {r['teacher_ms']:>11.3f} {r['student_ms']:>11.3f} {r['speedup']:>7.1f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
