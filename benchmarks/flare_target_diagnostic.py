"""How much does FLARE's future-latent target say beyond the present? (why lambda=0.2 may not beat lambda=0)

For held-out demo windows it compares, in the EMA target encoder's space:
  flare      cos(FLARE head prediction from o_t, z(o_{t+H}))   what the policy learned to predict
  copy_now   cos(z(o_t), z(o_{t+H}))                           a predictor that ignores the future entirely
  random     cos(z(o_i), z(o_j)) for unrelated frames           how spread out the embedding space is
If `flare` is barely above `copy_now`, the alignment objective is solved by copying the current observation and
carries little future information for the action head.

    python benchmarks/flare_target_diagnostic.py --policy outputs/tiny/policy --dataset outputs/tiny/data/arm_expert
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from wm_vla.models.checkpoint import load_checkpoint
from wm_vla.training.datasets import Windows, load_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--windows", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    policy, _, _ = load_checkpoint(Path(args.policy), expect="policy")
    store = load_frames(args.dataset, image_size=policy.cfg.image_size, cameras=policy.cfg.cameras, progress=False)
    windows = Windows(store, policy.cfg.horizon)
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randint(len(windows), (args.windows,), generator=gen)
    fut_idx = windows.future_index(idx)
    other = torch.randint(len(windows), (args.windows,), generator=gen)
    rows = {"flare": [], "copy_now": [], "random": []}
    with torch.no_grad():
        for start in range(0, args.windows, 128):
            sl = slice(start, start + 128)
            obs, fut, unrelated = windows.obs(idx[sl]), windows.obs(fut_idx[sl]), windows.obs(other[sl])
            z_now, z_fut, z_other = (policy.encode(o, target=True)[2] for o in (obs, fut, unrelated))
            context, mask, _ = policy.encode(obs)
            x = torch.randn(len(obs.state), policy.cfg.horizon, policy.cfg.action_dim, generator=gen)
            t = torch.zeros(len(obs.state))  # the future tokens see the noisy chunk at flow time 0 (sampling start)
            _, future = policy.velocity(x, t, context, mask, policy.norm_state(obs.state))
            rows["flare"].append(F.cosine_similarity(future.mean(1), z_fut, dim=-1))
            rows["copy_now"].append(F.cosine_similarity(z_now, z_fut, dim=-1))
            rows["random"].append(F.cosine_similarity(z_now, z_other, dim=-1))
    result = {k: round(float(torch.cat(v).mean()), 4) for k, v in rows.items()}
    result.update(policy=args.policy, dataset=args.dataset, windows=args.windows,
                  flare_weight=policy.cfg.flare_weight, horizon=policy.cfg.horizon)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
