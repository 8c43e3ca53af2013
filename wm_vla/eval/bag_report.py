"""Bag evaluation report files: `report.json`, `report.md` and PNG timelines (matplotlib)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _plots(report: dict[str, Any], out: Path, score_only: bool) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["decisions"]
    t = np.array([r["t_rel_s"] for r in rows])
    paths = []

    def col(key: str, pick: Any = None) -> np.ndarray:
        return np.array([(pick(r) if pick else r.get(key, np.nan)) if (key in r or pick) else np.nan for r in rows],
                        dtype=float)

    fig, axes = plt.subplots(3 if not score_only else 1, 1, figsize=(10, 7.5 if not score_only else 3), sharex=True,
                             squeeze=False)
    ax_f = axes[-1, 0]
    def lines(ax: Any, specs: tuple[tuple[str, str, str], ...], ylabel: str, where: str) -> None:
        for key, label, c in specs:
            ax.plot(t, col(key), ".-", ms=3, lw=0.8, label=label, color=c)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc=where)

    if not score_only:
        lines(axes[0, 0], (("err_cand0", "candidate 0 (single sample)", "#9d9d9d"),
                           ("err_chosen", "GPC-RANK choice", "#4c78a8"), ("err_best", "best of K", "#54a24b")),
              "MAE vs recorded\ncommand chunk", "upper right")
        lines(axes[1, 0], (("cos_wm_recorded", "WM(z_t, recorded chunk)", "#e45756"),
                           ("cos_wm_chosen", "WM(z_t, chosen chunk)", "#4c78a8"),
                           ("cos_static", "z_t (no change)", "#9d9d9d")), "cos to realised\nz_{t+H}", "lower right")
    ax_f.plot(t, col("recorded_failure_prob"), ".-", ms=3, lw=0.8, color="#e45756", label="recorded chunk")
    ax_f.plot(t, col("failure_prob", lambda r: r["failure_prob"][r["chosen"]] if r.get("failure_prob") else np.nan),
              ".-", ms=3, lw=0.8, color="#4c78a8", label="chosen candidate")
    ax_f.axhline(report["config"]["fail_threshold"], color="k", lw=0.6, ls="--")
    ax_f.set_ylabel("WM P(failure)")
    ax_f.set_ylim(-0.02, 1.02)
    ax_f.set_xlabel("time in bag (s)")
    ax_f.legend(fontsize=7, loc="upper right")
    eps = np.array([r["episode"] for r in rows])
    for i in np.flatnonzero(np.diff(eps)) + 1:
        for a in axes[:, 0]:
            a.axvline(t[i], color="#bbbbbb", lw=0.5)
    fig.suptitle(f"{Path(report['config']['bag']).name}: {len(rows)} decisions", fontsize=9)
    fig.tight_layout()
    paths.append(out / "timeline.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    if not score_only and report["summary"]["error"]["per_step"].get("err_step_chosen"):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
        for key, label, c in (("err_step_cand0", "candidate 0", "#9d9d9d"), ("err_step_chosen", "chosen", "#4c78a8"),
                              ("err_step_best", "best of K", "#54a24b")):
            a1.plot(report["summary"]["error"]["per_step"][key], ".-", label=label, color=c)
        a1.set_xlabel("horizon step")
        a1.set_ylabel("MAE vs recorded")
        a1.legend(fontsize=7)
        joints = report["summary"]["error"]["per_joint_chosen"]
        a2.bar(list(joints), list(joints.values()), color="#4c78a8")
        a2.set_ylabel("MAE (chosen) per action dim")
        a2.tick_params(axis="x", labelrotation=45, labelsize=7)
        fig.tight_layout()
        paths.append(out / "errors.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def _markdown(report: dict[str, Any], pngs: list[Path], score_only: bool) -> str:
    s, cfg = report["summary"], report["config"]
    lines = [f"# Bag {'score' if score_only else 'evaluation'}: `{cfg['bag']}`", "",
             f"policy `{cfg['policy']}`, world model `{cfg['wm']}`, backend {report['backend']}, K={cfg['k']}, "
             f"seed {cfg['seed']}; {s['decisions']} decisions in {s['episodes']} episode(s) over "
             f"{s['bag_duration_s']:.1f} s of bag ({s['mode']} mode).", ""]
    if report["warnings"] or report["issues"]:
        lines += ["## Warnings and bag issues", ""]
        lines += [f"- {w}" for w in report["warnings"]]
        lines += [f"- {k}: {v['count']} (e.g. {v['example']})" for k, v in report["issues"].items()]
        lines.append("")
    if not score_only:
        e, r, w = s["error"], s["ranking"], s["world_model"]
        lines += ["## Candidates vs recorded commands (MAE, action units)", "",
                  "| candidate 0 | GPC-RANK choice | best of K | mean candidate |", "|---|---|---|---|",
                  f"| {_fmt(e['cand0'])} | {_fmt(e['chosen'])} | {_fmt(e['best_of_k'])} | {_fmt(e['mean_candidate'])} |", "",
                  "## Ranking", "",
                  f"- Spearman(score, closeness to operator), mean over decisions: {_fmt(r['spearman_score_vs_closeness'], 3)}",
                  f"- chosen candidate's error rank (0 = closest, 1 = farthest): {_fmt(r['chosen_error_rank'], 3)}",
                  f"- chosen is the closest candidate: {_fmt(r['chosen_is_closest'], 3)}; switched away from "
                  f"candidate 0: {r['switched']} of {s['decisions']}", "",
                  "## World model vs realised future (cosine to the policy encoder's z at t+H)", "",
                  f"- WM prediction for the recorded chunk: {_fmt(w['cos_pred_recorded_vs_realised'])}",
                  f"- WM prediction for the chosen chunk: {_fmt(w['cos_pred_chosen_vs_realised'])}",
                  f"- baseline z_t (no change): {_fmt(w['cos_now_vs_realised'])}", ""]
        if "replay" in s:
            rp = s["replay"]
            lines += ["## Replay of recorded decisions", "",
                      f"- {rp['decisions']} decisions, max |candidate - recorded| = {rp['max_abs_diff']:.3g}, "
                      f"same choice {rp['chosen_match']}/{rp['with_recorded_choice']}", ""]
    moments = report["failure_moments"]
    lines += [f"## Moments where the WM predicts failure (P >= {cfg['fail_threshold']})", ""]
    if moments:
        lines += ["| t (s) | episode | flags | P(recorded) | P(chosen) | min P(candidates) |", "|---|---|---|---|---|---|"]
        lines += [f"| {m['t_s'] - report['decisions'][0]['t_s']:.1f} | {m['episode']} | {', '.join(m['flags'])} | "
                  f"{_fmt(m['recorded_failure_prob'], 2)} | {_fmt(m['chosen_failure_prob'], 2)} | "
                  f"{_fmt(m['min_candidate_failure_prob'], 2)} |" for m in moments[:50]]
        if len(moments) > 50:
            lines.append(f"\n({len(moments) - 50} more in report.json)")
    else:
        lines.append("none")
    lines += ["", "## Latency per stage (ms)", "", "| stage | p50 | p99 |", "|---|---|---|"]
    lines += [f"| {k} | {v['p50']:.2f} | {v['p99']:.2f} |" for k, v in s["latency_ms"].items()]
    th = s["throughput"]
    lines += ["", f"Throughput: {_fmt(th['decisions_per_s'], 2)} decisions/s (model time), "
              f"{_fmt(th['decisions_per_s_incl_load'], 2)} decisions/s including reading the bag "
              f"({th['load_s']:.1f} s).", ""]
    lines += [f"![{p.stem}]({p.name})" for p in pngs]
    return "\n".join(lines) + "\n"


def write_bag_report(report: dict[str, Any], out: Path, score_only: bool = False) -> list[Path]:
    """`<out>/report.json`, `<out>/report.md` and its PNGs; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = _plots(report, out, score_only) if report["decisions"] else []
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(report, indent=1, default=float))
    md_path.write_text(_markdown(report, pngs, score_only))
    return [json_path, md_path, *pngs]
