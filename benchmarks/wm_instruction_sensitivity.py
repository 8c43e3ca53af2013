"""Does a world model's ranking follow the instruction? The same decisions, ranked again with the colour swapped.

For every labelled decision of a `wm-vla sim label-candidates` folder, the world model scores the K candidates with
the observation encoded under its own instruction, then under each other colour's instruction (same images, same
chunks). Reported: how often the pick stays the same, how often the pick has the best true outcome (for the actual
instruction) either way, and how far the latent moves. A ranker that reads the instruction changes its pick, and
loses its edge on the actual outcome when asked for the wrong cube.

    python benchmarks/wm_instruction_sensitivity.py --policy outputs/flare_seed1/policy \\
        --wm outputs/flare_seed1/wm_teacher --candidates outputs/flare_seed1/data/arm_candidates

With `--dataset` (a `wm-vla sim collect` folder with hindsight labels) it also asks the plainest question on the
recorded frames: is the predicted progress of the recorded chunk higher for the frame's own instruction (true
progress > 0 on a successful demonstration) than for the other colours (true progress 0)?
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from wm_vla.models.checkpoint import load_checkpoint
from wm_vla.models.flare_policy import FlarePolicy, ObsBatch
from wm_vla.models.world_model import LatentWorldModel
from wm_vla.sim.tasks import ARM_COLOURS
from wm_vla.training.candidate_labels import CandidateSet, load_candidate_set
from wm_vla.training.datasets import load_frames
from wm_vla.training.train_world_model import Transitions, build_transitions, hindsight_dataset_parts


def other_colour(instruction: str, shift: int) -> str:
    """The instruction with its colour word replaced by the colour `shift` places on in ARM_COLOURS."""
    def swap(m: re.Match[str]) -> str:
        return ARM_COLOURS[(ARM_COLOURS.index(m.group(0)) + shift) % len(ARM_COLOURS)]
    return re.sub(r"\b(" + "|".join(ARM_COLOURS) + r")\b", swap, instruction)


@torch.no_grad()
def rank(policy: FlarePolicy, wm: LatentWorldModel, c: CandidateSet, instructions: list[str]
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (N, K), latents (N, latent)) with the observations encoded under `instructions`."""
    z = torch.cat([policy.encode(ObsBatch(c.images[i:i + 128].float() / 255.0, c.state[i:i + 128],
                                          instructions[i:i + 128]))[2] for i in range(0, len(c), 128)])
    out = wm(z.repeat_interleave(c.k, 0), policy.norm_action(c.chunks.flatten(0, 1)))
    return (out.progress - out.failure_prob).reshape(len(c), c.k), z


@torch.no_grad()
def dataset_rows(policy: FlarePolicy, dataset: str) -> tuple[Transitions, list[tuple[torch.Tensor, ...]]]:
    """The recorded frames under their own instruction, and their hindsight copies (other instructions)."""
    store = load_frames(dataset, policy.cfg.image_size, policy.cfg.cameras, progress=False)
    if not store.relabels:
        raise SystemExit(f"{dataset}: no hindsight labels (collect it with `wm-vla sim collect` without --no-hindsight)")
    return build_transitions(policy, [dataset], progress=False), hindsight_dataset_parts(policy, store)


@torch.no_grad()
def dataset_progress(wm: LatentWorldModel, own: Transitions, others: list[tuple[torch.Tensor, ...]]) -> dict[str, float]:
    """Predicted progress of the recorded chunks under the frames' own instruction vs the relabelled ones."""
    own_p = wm(own.z, own.chunk).progress
    other_p = [wm(part[0], part[1]).progress for part in others]
    r = {"frames": len(own), "progress_own_true": float(own.progress.mean()), "progress_own": float(own_p.mean()),
         "progress_other_true": float(torch.cat([part[4] for part in others]).mean()),
         "progress_other": float(torch.cat(other_p).mean())}
    if all(len(p) == len(own) for p in other_p):  # the copies keep every frame: compare frame by frame
        r["own_above_every_other"] = float((own_p > torch.stack(other_p).max(0).values).float().mean())
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--wm", required=True, action="append", help="repeatable: world model checkpoints")
    ap.add_argument("--candidates", required=True, help="a `wm-vla sim label-candidates` folder")
    ap.add_argument("--dataset", default=None, help="a `wm-vla sim collect` folder with hindsight labels (see above)")
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args(argv)
    policy = load_checkpoint(Path(args.policy), expect="policy")[0]
    assert isinstance(policy, FlarePolicy)
    pc = policy.cfg
    c = load_candidate_set(args.candidates, pc.cameras, pc.image_size, pc.horizon, pc.action_dim, pc.state_dim)
    truth = torch.where(c.failure.bool(), -1.0, torch.where(c.success.bool(), 1.0, c.progress))
    best = truth.max(1).values

    def hits(scores: torch.Tensor) -> float:
        return float((truth.gather(1, scores.argmax(1)[:, None])[:, 0] >= best - 1e-6).float().mean())

    report: dict[str, object] = {"policy": args.policy, "candidates": args.candidates, "decisions": len(c), "k": c.k,
                                 "first_sample_best": float((truth[:, 0] >= best - 1e-6).float().mean()), "wm": {}}
    rows = dataset_rows(policy, args.dataset) if args.dataset else None
    for path in args.wm:
        wm = load_checkpoint(Path(path), expect="world_model")[0]
        assert isinstance(wm, LatentWorldModel)
        own, z = rank(policy, wm, c, c.instructions)
        swapped = [rank(policy, wm, c, [other_colour(t, s) for t in c.instructions]) for s in range(1, len(ARM_COLOURS))]
        r = {"same_pick_when_swapped": sum(float((own.argmax(1) == s.argmax(1)).float().mean()) for s, _ in swapped) / len(swapped),
             "best_true_outcome_own_instruction": hits(own),
             "best_true_outcome_swapped_instruction": sum(hits(s) for s, _ in swapped) / len(swapped),
             "latent_relative_change": sum(float(((z - zs).norm(dim=1) / z.norm(dim=1)).mean()) for _, zs in swapped) / len(swapped),
             "latent_cosine": sum(float(F.cosine_similarity(z, zs).mean()) for _, zs in swapped) / len(swapped)}
        if rows is not None:
            r["dataset"] = dataset_progress(wm, *rows)
        report["wm"][path] = r  # type: ignore[index]
        print(f"{path}: the same pick with the colour swapped in {r['same_pick_when_swapped']:.0%} of {len(c)} decisions; "
              f"pick has the best true outcome {r['best_true_outcome_own_instruction']:.0%} (own instruction) vs "
              f"{r['best_true_outcome_swapped_instruction']:.0%} (swapped), first sample "
              f"{report['first_sample_best']:.0%}; latent moves {r['latent_relative_change']:.1%}")
        if args.dataset:
            d = r["dataset"]
            above = f"; own above both others in {d['own_above_every_other']:.0%}" if "own_above_every_other" in d else ""
            print(f"  {args.dataset}, {d['frames']} frames: predicted progress, own instruction {d['progress_own']:.3f} "
                  f"(true {d['progress_own_true']:.3f}), other colours {d['progress_other']:.3f} "
                  f"(true {d['progress_other_true']:.3f}){above}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
