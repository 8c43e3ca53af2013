"""Closed-loop success over ROS 2 vs the direct (no-ROS) eval on the same seeds, ranked (K) and single-sample.

Runs `wm-vla demo` (the full stack over DDS on the sim) for N episodes per configuration and `wm-vla eval sim`'s
evaluation on the same held-out seeds, then reports whether each ROS success rate lies inside the direct eval's
95% Wilson interval. Writes OUT.json.

    python benchmarks/ros_closed_loop.py --episodes 50 --out outputs/bench/ros_closed_loop
    python benchmarks/ros_closed_loop.py --episodes 50 --rate-scale 0.25   # sim clock: load-independent timing
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wm_vla.eval.closed_loop import HELDOUT_SEED, EvalConfig, evaluate
from wm_vla.eval.ros_demo import DemoConfig, run_demo
from wm_vla.training.pipeline import default_checkpoints, default_wm_encoder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--seed", type=int, default=HELDOUT_SEED)
    ap.add_argument("--rate-scale", type=float, default=1.0)
    ap.add_argument("--out", default="outputs/bench/ros_closed_loop")
    args = ap.parse_args()
    policy, wm = (str(p) for p in default_checkpoints())
    out = Path(args.out)
    ros = run_demo(DemoConfig(episodes=args.episodes, k=args.k, seed=args.seed, policy=policy, world_model=wm,
                              out=str(out.with_name(out.name + "_demo")), rate_scale=args.rate_scale))
    encoder = default_wm_encoder()  # the shipped world model's latent, as the ROS stack ranks in
    direct = evaluate(EvalConfig(policy=policy, wm=wm, world="arm", episodes=args.episodes, seed=args.seed,
                                 ks=(args.k,), oracle_k=0, progress=True,
                                 wm_encoder=str(encoder) if encoder else None))
    rows = {r["name"]: r for r in direct["configs"]}
    report = {"episodes": args.episodes, "seeds": [args.seed, args.seed + args.episodes - 1], "k": args.k,
              "rate_scale": args.rate_scale, "configs": []}
    for ros_name, direct_name in (("ranked", "rank"), ("single", "single")):
        r = next(c for c in ros["configs"] if c["name"] == ros_name)
        d = rows[direct_name]
        inside = d["ci95"][0] <= r["success_rate"] <= d["ci95"][1]
        report["configs"].append({"name": ros_name, "ros_success_rate": r["success_rate"], "ros_ci95": r["ci95"],
                                  "direct_success_rate": d["success_rate"], "direct_ci95": d["ci95"],
                                  "ros_inside_direct_ci95": inside})
        print(f"{ros_name}: ROS {r['successes']}/{r['episodes']} = {100 * r['success_rate']:.0f}% vs direct "
              f"{d['successes']}/{d['episodes']} = {100 * d['success_rate']:.0f}% (CI {100 * d['ci95'][0]:.0f}-"
              f"{100 * d['ci95'][1]:.0f}%): {'inside' if inside else 'OUTSIDE'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
