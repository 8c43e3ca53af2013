"""Does a decision cost the same when it follows an idle gap? The in-process K=16 decision (encode, K samples, world
model, GPC-RANK) timed three ways in one process, interleaved in random order: back to back; one per decision period
with the CPU idle in between (as vla_node decides, one per chunk); one per period with the gap filled by sim steps
(busy, as the direct eval runs). The ratios say which reference the ROS stack's decision time should be divided by.

    python benchmarks/decision_pacing.py --rounds 8 --per-round 4 --out outputs/bench/decision_pacing

Writes OUT.json (per-mode times and p50 ratios) and OUT.png (the times per mode).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

MODES = ("back_to_back", "idle_gap", "busy_gap")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--per-round", type=int, default=4, help="decisions per mode and round")
    ap.add_argument("--period", type=float, default=0.0, help="decision period, s (0: the policy's, as vla_node)")
    ap.add_argument("--out", default="outputs/bench/decision_pacing")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from wm_vla.eval.plots import write_json_and_boxes
    from wm_vla.eval.ros_demo import DemoConfig, fixed_decision

    ref = fixed_decision(DemoConfig(backend=args.backend, k=args.k))
    period = args.period or ref.period_s
    hold = np.asarray(ref.obs.state, dtype=np.float32)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    rng = random.Random(0)
    n = 0
    for _ in tqdm(range(args.rounds), desc="rounds", unit="round"):
        for mode in rng.sample(MODES, len(MODES)):
            start = time.perf_counter()
            for _ in range(args.per_round):
                if mode == "idle_gap":
                    time.sleep(max(0.0, start + period - time.perf_counter()))
                elif mode == "busy_gap":
                    while time.perf_counter() < start + period:
                        if ref.world.step(hold).done:  # physics + camera render, like the sim beside the stack
                            ref.world.reset(1_000_000)
                start = time.perf_counter()
                times[mode].append(ref.decide(n))
                n += 1
    ref.close()

    p50 = {m: float(np.percentile(v, 50)) for m, v in times.items()}
    ratios = {f"{m}/back_to_back": p50[m] / p50["back_to_back"] for m in MODES[1:]}
    for m in MODES:
        print(f"{m:>13}: p50 {p50[m]:7.1f} ms  p90 {np.percentile(times[m], 90):7.1f} ms  ({len(times[m])} decisions)")
    print(f"decision period {period:.2f} s, K={args.k}, {args.backend}; ratios of p50s: " +
          ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    report = {"backend": args.backend, "k": args.k, "period_s": period, "p50_ms": p50, "ratios": ratios,
              "times_ms": times}
    title = f"K={args.k} {args.backend} decision, one per {period:.1f} s vs back to back"
    json_path, png_path = write_json_and_boxes(report, times, title, Path(args.out))
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
