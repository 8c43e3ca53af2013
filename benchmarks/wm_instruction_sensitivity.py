"""Does a world model's ranking follow the instruction? The same decisions, ranked again with the colour swapped.

For every labelled decision of a `wm-vla sim label-candidates` folder, the world model scores the K candidates with
the observation encoded under its own instruction, then under each other colour's instruction (same images, same
chunks). Reported: how often the pick stays the same, how often the pick has the best true outcome (for the actual
instruction) either way, and how far the latent moves. A ranker that reads the instruction changes its pick, and
loses its edge on the actual outcome when asked for the wrong cube.

    python benchmarks/wm_instruction_sensitivity.py --policy outputs/flare_seed1/policy \\
        --wm outputs/flare_seed1/wm_teacher --candidates outputs/flare_seed1/data/arm_candidates
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--wm", required=True, action="append", help="repeatable: world model checkpoints")
    ap.add_argument("--candidates", required=True, help="a `wm-vla sim label-candidates` folder")
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
        report["wm"][path] = r  # type: ignore[index]
        print(f"{path}: the same pick with the colour swapped in {r['same_pick_when_swapped']:.0%} of {len(c)} decisions; "
              f"pick has the best true outcome {r['best_true_outcome_own_instruction']:.0%} (own instruction) vs "
              f"{r['best_true_outcome_swapped_instruction']:.0%} (swapped), first sample "
              f"{report['first_sample_best']:.0%}; latent moves {r['latent_relative_change']:.1%}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
