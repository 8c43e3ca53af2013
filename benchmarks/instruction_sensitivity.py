"""Does a policy listen to the instruction? Same frames, same noise, the colour word swapped.

At random dataset frames the policy samples chunks twice with the true instruction and different noise (the
spread the policy has anyway), and once per colour with the SAME noise and only the colour word changed. If the
colour distance is small against the noise spread, the policy ignores the words that name the target.

    python benchmarks/instruction_sensitivity.py --policy CKPT --dataset DIR [--frames 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from pathlib import Path

import torch

from wm_vla.models.checkpoint import load_checkpoint
from wm_vla.models.flare_policy import FlarePolicy, ObsBatch
from wm_vla.sim.tasks import ARM_COLOURS as COLOURS
from wm_vla.training.datasets import Windows, load_frames


def with_colour(instruction: str, colour: str) -> str:
    return re.sub(r"\b(" + "|".join(COLOURS) + r")\b", colour, instruction)


def chunk_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean Frobenius distance between paired chunks (B, H, A), in the action's own units."""
    return float((a - b).flatten(1).norm(dim=1).mean())


@torch.no_grad()
def sensitivity(policy: FlarePolicy, obs: ObsBatch, seed: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    b, h, a = obs.images.shape[0], policy.cfg.horizon, policy.cfg.action_dim
    noise = torch.randn(b, 2, h, a, generator=g)
    own, *_ = policy.sample_many(obs, 2, noise=noise)
    chunks = {}
    for colour in COLOURS:
        swapped = ObsBatch(obs.images, obs.state, [with_colour(t, colour) for t in obs.instructions])
        chunks[colour] = policy.sample_many(swapped, 2, noise=noise)[0][:, 0]
    noise_spread = chunk_distance(own[:, 0], own[:, 1])
    colour_spread = sum(chunk_distance(chunks[x], chunks[y]) for x, y in itertools.combinations(COLOURS, 2)) / 3
    return {"noise_spread": round(noise_spread, 4), "colour_spread": round(colour_spread, 4),
            "colour_over_noise": round(colour_spread / max(noise_spread, 1e-9), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, action="append", help="repeatable")
    ap.add_argument("--dataset", required=True, help="LeRobot dataset whose instructions name a colour")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args()
    results = {}
    for path in args.policy:
        policy, _, _ = load_checkpoint(Path(path), expect="policy")
        assert isinstance(policy, FlarePolicy)
        windows = Windows(load_frames(args.dataset, policy.cfg.image_size, policy.cfg.cameras, progress=False),
                          policy.cfg.horizon)
        idx = torch.randint(len(windows), (args.frames,), generator=torch.Generator().manual_seed(args.seed))
        results[path] = sensitivity(policy.eval(), windows.obs(idx), args.seed)
        r = results[path]
        print(f"{path}: chunk distance with other noise {r['noise_spread']:.3f}, with another colour word "
              f"{r['colour_spread']:.3f} (ratio {r['colour_over_noise']:.2f})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"dataset": args.dataset, "frames": args.frames, "policies": results},
                                             indent=2))


if __name__ == "__main__":
    main()
