"""World models trained with different seeds, alone and as an ensemble: how often each one's pick among a labelled
decision's candidates has the best true outcome, on the held-out decisions none of them trained on.

Train the members with the same `--split-seed` (the shipped teacher's split is that of `--seed 0`), e.g.

    wm-vla train world-model --dataset D1 --dataset D2 --candidates C --policy P --steps 3000 --seed 1 --split-seed 0 --out T1
    python benchmarks/wm_ensemble.py --policy P --dataset D1 --dataset D2 --candidates C --wm T0 --wm T1 --wm T2 \
        --split-seed 0 --out outputs/bench/wm_ensemble.json

It also reports how often two members pick the same candidate (how reproducible one teacher's top-1 is across
training seeds) and how often each member's pick equals the ensemble's.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import torch

from wm_vla.models.checkpoint import load_checkpoint, load_world_models
from wm_vla.models.flare_policy import FlarePolicy
from wm_vla.models.world_model import WorldModelEnsemble
from wm_vla.training.train_world_model import (
    build_transitions,
    group_scores,
    true_outcome_top1,
    true_scores,
    validation_split,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--dataset", action="append", required=True, help="the members' --dataset folders, same order")
    ap.add_argument("--candidates", action="append", required=True, help="the members' label folders, same order")
    ap.add_argument("--wm", action="append", required=True, help="a member (repeat; at least 2)")
    ap.add_argument("--split-seed", type=int, default=0, help="the members' --split-seed (or --seed if none was given)")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args(argv)
    if len(args.wm) < 2:
        ap.error("give at least two --wm members")
    with torch.no_grad():
        report = ensemble_report(args)
    print(f"{report['heldout_decisions']} held-out labelled decisions, {report['candidates_per_decision']} candidates "
          f"each (split seed {args.split_seed})")
    for name, value in report["best_true_outcome"].items():
        print(f"  pick has the best true outcome: {value:6.1%}  {name}")
    for pair, value in report["same_pick_pairs"].items():
        print(f"  same pick: {value:6.1%}  {pair}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


def ensemble_report(args: argparse.Namespace) -> dict[str, Any]:
    """The figures, for the members `args.wm` and their ensemble, on the split of `args.split_seed`."""
    policy, _, _ = load_checkpoint(Path(args.policy), expect="policy")
    assert isinstance(policy, FlarePolicy)
    data = build_transitions(policy, args.dataset, True, args.candidates)
    _, _, split = validation_split(data, args.val_fraction, torch.Generator().manual_seed(args.split_seed))
    if split is None or not len(split.held_rows):
        raise SystemExit("no held-out labelled decisions: pass the label folders with --candidates")
    rows = split.held_rows
    members = [load_world_models(p)[0] for p in args.wm]
    ensemble = WorldModelEnsemble(members).eval()
    truth = true_scores(data, rows)
    first = float((truth[:, 0] >= truth.max(1).values - 1e-6).float().mean())
    picks = {p: group_scores(m.eval(), data.z, data.chunk, rows).argmax(1) for p, m in zip(args.wm, members)}
    ens_pick = group_scores(ensemble, data.z, data.chunk, rows).argmax(1)
    return {
        "heldout_decisions": len(rows), "candidates_per_decision": int(rows.shape[1]),
        "best_true_outcome": {"first_sample": first,
                              **{p: true_outcome_top1(m, data, rows) for p, m in zip(args.wm, members)},
                              "ensemble": true_outcome_top1(ensemble, data, rows)},
        "same_pick_pairs": {f"{a} | {b}": float((picks[a] == picks[b]).float().mean())
                            for a, b in itertools.combinations(args.wm, 2)},
        "same_pick_as_ensemble": {p: float((picks[p] == ens_pick).float().mean()) for p in args.wm},
    }


if __name__ == "__main__":
    raise SystemExit(main())
