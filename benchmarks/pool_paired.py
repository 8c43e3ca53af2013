"""Pool `wm-vla eval sim` reports (e.g. one per training seed) into one ranked-vs-single comparison.

Each report's rank/oracle configurations were run on the same seeds as its single sample, so every episode is a
pair; pooling adds the pairs of all reports and applies the exact McNemar test to the discordant ones:

    python benchmarks/pool_paired.py outputs/seeds_paired/seed0.json outputs/seeds_paired/seed1.json ... --k 16

`--against OTHER.json` compares the same configuration across two reports instead (e.g. two world models ranking
the same policy's candidates): both must have been run on the same seeds.

    python benchmarks/pool_paired.py outputs/steps3_wm/eval_rank_s3.json --against outputs/steps3_wm/eval_shippedwm_s3.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from wm_vla.eval.stats import paired, wilson


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", help="eval JSON files written by `wm-vla eval sim --out`")
    ap.add_argument("--config", default="rank", choices=("rank", "oracle"))
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--against", default=None, help="compare --config K=--k of each report with the same "
                    "configuration in this report (same seeds), instead of with the single sample")
    args = ap.parse_args(argv)
    if args.against:
        return _against(args)
    pooled_a: list[bool] = []
    pooled_b: list[bool] = []
    events_a: Counter[str] = Counter()
    events_b: Counter[str] = Counter()
    for path in args.reports:
        try:
            a, _ = _outcomes(path, args.config, args.k, events_a)
            b, _ = _outcomes(path, "single", 1, events_b)
        except (OSError, json.JSONDecodeError, KeyError, StopIteration) as exc:
            print(f"{path}: not an eval report with per-episode outcomes for single and {args.config} K={args.k} "
                  f"({type(exc).__name__}: {exc})", file=sys.stderr)
            return 2
        p = paired(a, b)
        print(f"{path}: {args.config} K={args.k} {wilson(sum(a), len(a))}; single {wilson(sum(b), len(b))}; "
              f"only {args.config} {p.only_a}, only single {p.only_b}, McNemar p = {p.p_value:.3g}")
        pooled_a += a
        pooled_b += b
    p = paired(pooled_a, pooled_b)
    print(f"pooled over {len(args.reports)} reports: {args.config} K={args.k} {wilson(sum(pooled_a), len(pooled_a))}; "
          f"single {wilson(sum(pooled_b), len(pooled_b))}; episodes won only by {args.config}: {p.only_a}, only by "
          f"single: {p.only_b}; exact McNemar p = {p.p_value:.3g}")
    if events_a or events_b:
        print(f"how the episodes ended, pooled: {args.config} K={args.k} {_ends(events_a)}; single {_ends(events_b)}")
    return 0


def _ends(events: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in events.most_common())


def _outcomes(path: str, name: str, k: int, events: Counter[str] | None = None) -> tuple[list[bool], list[int] | None]:
    """Per-episode successes of the main policy's configuration (name, k) and the report's seeds (None if it has
    none); KeyError/StopIteration if the configuration or its outcomes are absent. Adds its episode ends (success,
    touched_wrong_cube, ...) to `events`."""
    report = json.loads(Path(path).read_text())
    row = next(r for r in report["configs"] if r["name"] == name and r["k"] == k and r.get("policy", "main") == "main")
    if events is not None:
        events.update(row.get("events", {}))
    return row["per_episode_success"], report.get("seeds")


def _against(args: argparse.Namespace) -> int:
    try:
        base, base_seeds = _outcomes(args.against, args.config, args.k)
    except (OSError, json.JSONDecodeError, KeyError, StopIteration) as exc:
        print(f"{args.against}: no per-episode outcomes for {args.config} K={args.k} ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return 2
    for path in args.reports:
        try:
            a, seeds = _outcomes(path, args.config, args.k)
        except (OSError, json.JSONDecodeError, KeyError, StopIteration) as exc:
            print(f"{path}: no per-episode outcomes for {args.config} K={args.k} ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            return 2
        if seeds is None or seeds != base_seeds or len(a) != len(base):
            print(f"{path}: seeds {seeds} ({len(a)} episodes) differ from {args.against}'s {base_seeds} "
                  f"({len(base)} episodes): not a paired comparison", file=sys.stderr)
            return 2
        p = paired(a, base)
        print(f"{args.config} K={args.k}: {path} {wilson(sum(a), len(a))} vs {args.against} "
              f"{wilson(sum(base), len(base))}; won only by the first: {p.only_a}, only by the second: {p.only_b}; "
              f"exact McNemar p = {p.p_value:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
