"""Success against camera->command latency as the number of Euler steps per sample changes (tiny preset, CPU).

For each steps value N it runs, with the default checkpoints:

- `wm-vla eval sim --k 16 --oracle-k 0 --switch-margin 0.1 --denoise-steps N` (direct, held-out seeds): success of
  the single sample and of GPC-RANK K=16, with 95% CIs;
- `wm-vla demo --backend onnxruntime --denoise-steps N` (the whole ROS 2 stack on the wall clock): camera stamp ->
  command p50/p99 of the ranked (K=16) and the single-sample stacks, and the ranked decision's camera ->
  RankingResult time over ROS divided by the same decision in-process (the demo's ratio).

and writes OUT/tradeoff.json and OUT/tradeoff.png (success vs p99, and the decision ratio vs p99: one point per
steps value, with both latency targets drawn). Results already in OUT are reused, so an interrupted run resumes:

    python benchmarks/denoise_steps_tradeoff.py --steps 2,3,4,5,10 --out outputs/bench/steps
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def run(cmd: list[str]) -> None:
    print("+ wm-vla " + " ".join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "wm_vla.cli", *cmd], check=True)


def measure(steps: int, out: Path, eval_episodes: int, ros_episodes: int) -> dict[str, Any]:
    direct = out / f"eval_steps{steps}"
    if not direct.with_suffix(".json").is_file():
        run(["eval", "sim", "--world", "arm", "--episodes", str(eval_episodes), "--k", "16", "--oracle-k", "0",
             "--switch-margin", "0.1", "--denoise-steps", str(steps), "--jobs", "2", "--no-progress", "--out",
             str(direct)])
    ros = out / f"ros_steps{steps}"
    if not (ros / "report.json").is_file():
        run(["demo", "--backend", "onnxruntime", "--denoise-steps", str(steps), "--episodes", str(ros_episodes),
             "--out", str(ros)])
    configs = {c["name"]: c for c in json.loads(direct.with_suffix(".json").read_text())["configs"]}
    report = json.loads((ros / "report.json").read_text())
    over_ros = {c["name"]: c for c in report["configs"]}
    row: dict[str, Any] = {"steps": steps}
    for name, ros_name in (("rank", "ranked"), ("single", "single")):
        c, r = configs[name], over_ros[ros_name]
        row[name] = {"k": c["k"], "successes": c["successes"], "episodes": c["episodes"],
                     "success_rate": c["success_rate"], "ci95": c["ci95"],
                     "ros_latency_ms_p50": r["latency_ms_p50"], "ros_latency_ms_p99": r["latency_ms_p99"],
                     "ros_episodes": r["episodes"], "ros_successes": r["successes"]}
    row["rank"]["ros_decision_ms_p50"] = report.get("decision_ms_ros_p50")  # the ranked stack's decisions
    row["rank"]["inprocess_decision_ms_p50"] = report.get("decision_ms_inprocess_p50")
    row["rank"]["ros_decision_ratio"] = report.get("decision_ratio_ros_over_inprocess")
    return row


def plot(rows: list[dict[str, Any]], budget_ms: float, ratio_target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, rx) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, colour, label, fmt in (("rank", "#4c78a8", "GPC-RANK K=16", "o-"),
                                     ("single", "#9d9d9d", "single sample", "o")):  # single: p99 not monotone
        xs = [r[name]["ros_latency_ms_p99"] for r in rows]
        ys = [100 * r[name]["success_rate"] for r in rows]
        err = [[100 * (r[name]["success_rate"] - r[name]["ci95"][0]) for r in rows],
               [100 * (r[name]["ci95"][1] - r[name]["success_rate"]) for r in rows]]
        ax.errorbar(xs, ys, yerr=err, fmt=fmt, color=colour, label=label, capsize=3)
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"{r['steps']} steps", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axvline(budget_ms, color="#d62728", linestyle="--", linewidth=1, label=f"{budget_ms:g} ms p99 target")
    ax.set_xlabel("camera stamp -> command p99 over ROS 2 (ms, onnxruntime, 2-core CPU)")
    ax.set_ylabel("success, held-out episodes (%; 95% CI)")
    ax.set_title("Euler steps per sample: success vs latency (arm, touch)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    measured = [r for r in rows if r["rank"].get("ros_decision_ratio") is not None]
    xs = [r["rank"]["ros_latency_ms_p99"] for r in measured]
    ys = [r["rank"]["ros_decision_ratio"] for r in measured]
    rx.plot(xs, ys, "o-", color="#4c78a8", label="GPC-RANK K=16")
    for r, x, y in zip(measured, xs, ys):
        rx.annotate(f"{r['steps']} steps", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    rx.axvline(budget_ms, color="#d62728", linestyle="--", linewidth=1, label=f"{budget_ms:g} ms p99 target")
    rx.axhline(ratio_target, color="#ff7f0e", linestyle="--", linewidth=1, label=f"ratio target {ratio_target:g}")
    if ys:  # keep the target line in view
        rx.set_ylim(min(*ys, ratio_target) - 0.03, max(*ys, ratio_target) + 0.03)
    rx.set_xlabel("camera stamp -> command p99 over ROS 2 (ms)")
    rx.set_ylabel("decision over ROS / the same decision in-process")
    rx.set_title("both targets hold in the lower left")
    rx.legend(loc="upper right", fontsize=8)
    rx.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list[dict[str, Any]], budget_ms: float, ratio_target: float) -> list[str]:
    """One line per steps value; `both` says whether the ranked stack met the p99 and the ratio targets."""
    lines = [f"{'steps':>5}  {'single':>22}  {'rank K=16':>22}  {'ROS p50/p99 single':>18}  {'ROS p50/p99 ranked':>18}"
             f"  {'ratio':>5}  both"]
    for r in rows:
        s, k = r["single"], r["rank"]
        ratio = k.get("ros_decision_ratio")
        both = ratio is not None and k["ros_latency_ms_p99"] <= budget_ms and ratio <= ratio_target
        lines.append(
            f"{r['steps']:>5}  {s['successes']:>3}/{s['episodes']} [{100 * s['ci95'][0]:.0f}-{100 * s['ci95'][1]:.0f}%]"
            f"{'':>8}  {k['successes']:>3}/{k['episodes']} [{100 * k['ci95'][0]:.0f}-{100 * k['ci95'][1]:.0f}%]"
            f"{'':>8}  {s['ros_latency_ms_p50']:7.1f}/{s['ros_latency_ms_p99']:6.1f} ms  "
            f"{k['ros_latency_ms_p50']:7.1f}/{k['ros_latency_ms_p99']:6.1f} ms"
            f"  {'-' if ratio is None else f'{ratio:.2f}':>5}  {'yes' if both else 'no'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="2,3,4,5,10", help="comma-separated Euler steps per sample")
    ap.add_argument("--eval-episodes", type=int, default=100, help="direct eval episodes per configuration")
    ap.add_argument("--ros-episodes", type=int, default=30, help="ROS episodes per stack (ranked and single)")
    ap.add_argument("--budget-ms", type=float, default=60.0, help="the p99 target drawn on the plot")
    ap.add_argument("--ratio-target", type=float, default=1.15, help="the decision-ratio target drawn on the plot")
    ap.add_argument("--out", default="outputs/bench/steps")
    args = ap.parse_args(argv)
    try:
        steps = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    except ValueError:
        ap.error(f"--steps must be comma-separated integers, got {args.steps!r}")
    if not steps or steps[0] < 1:
        ap.error(f"--steps must be positive integers, got {args.steps!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [measure(s, out, args.eval_episodes, args.ros_episodes) for s in steps]
    (out / "tradeoff.json").write_text(json.dumps({"budget_ms": args.budget_ms, "ratio_target": args.ratio_target,
                                                   "rows": rows}, indent=1))
    plot(rows, args.budget_ms, args.ratio_target, out / "tradeoff.png")
    for line in table(rows, args.budget_ms, args.ratio_target):
        print(line)
    print(f"wrote {out / 'tradeoff.json'} and {out / 'tradeoff.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
