"""The latency-budget figures: a per-stage profile, then `tune` for a tight and a loose budget on its measurements.

    python benchmarks/latency_budget.py --tight 40 --loose 150 [--device cpu-2core] [--decisions 500] \
        [--policy CKPT --wm CKPT] [--eval outputs/tiny/eval_follow2.json] [--out outputs/latency]

Writes OUT/profile_tiny.{json,png} (`wm-vla latency profile`, onnxruntime, K 1/4/16/64, steps 4/8/10) and
OUT/tuned_<B>ms.{yaml,json} per budget; each `tune` re-measures its chosen configuration (300 decisions) and prints
the re-measured p99 next to the search p99. A budget no configuration fits exits with code 3 and says so.
"""

from __future__ import annotations

import argparse
import sys

from wm_vla.cli import main


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tight", type=float, required=True)
    p.add_argument("--loose", type=float, required=True)
    p.add_argument("--device", default="cpu-2core")
    p.add_argument("--decisions", type=int, default=500)
    p.add_argument("--policy", default=None)
    p.add_argument("--wm", default=None)
    p.add_argument("--eval", action="append", default=[])
    p.add_argument("--out", default="outputs/latency")
    args = p.parse_args(argv)
    ckpt = [*(["--policy", args.policy] if args.policy else []), *(["--wm", args.wm] if args.wm else [])]
    profile = f"{args.out}/profile_tiny"
    rc = main(["latency", "profile", *ckpt, "--backend", "onnxruntime", "--k", "1,4,16,64", "--steps", "4,8,10",
               "--decisions", str(args.decisions), "--out", profile])
    if rc:
        return rc
    codes = []
    for budget in (args.tight, args.loose):
        codes.append(main(["latency", "tune", *ckpt, "--device", args.device, "--budget-ms", f"{budget:g}",
                           "--measurements", f"{profile}.json", *(a for e in args.eval for a in ("--eval", e)),
                           "--out", f"{args.out}/tuned_{budget:g}ms"]))
    return max(codes)


if __name__ == "__main__":
    sys.exit(run())
