"""Soak-test figures (ROS-free): per-node RSS over time, deadline misses, dropped observations, success rate.

`benchmarks/soak.py` runs the sim stack and samples every few seconds into `SoakSample`s; `summarize_soak` turns
them into the report (growth measured after the warm-up, counters as differences over the same window) and
`plot_soak` draws RSS per node and cumulative deadline misses over time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from wm_vla.cpus import cgroup_cpu_quota, cgroup_dir, usable_cpus
from wm_vla.eval.plots import write_json
from wm_vla.eval.stats import wilson

RSS_GROWTH_MAX_PCT = 5.0       # acceptance (issue #9): RSS growth after warm-up
DEADLINE_MISS_MAX = 0.001      # acceptance: deadline misses <= 0.1 % of control ticks


@dataclass
class SoakSample:
    t: float                                    # s since the stack started
    rss_mb: dict[str, float]                    # node -> resident set size
    counters: dict[str, dict[str, float]] = field(default_factory=dict)  # node -> its latest /diagnostics values


def machine_info() -> dict[str, Any]:
    """What the soak ran on: CPUs visible and usable, the cgroup's CPU quota (`cpu.max`), the kernel."""
    import platform

    quota = cgroup_cpu_quota()
    return {"cpus": os.cpu_count(), "cpus_usable": usable_cpus(), "cgroup_cpu_quota": quota if quota else "none",
            "kernel": platform.release()}


def machine_counters() -> dict[str, float]:
    """Cumulative machine-wide time other tenants or the cgroup quota took from us: CPU steal (hypervisor) and
    cgroup throttling, plus the 1-minute load average. Differences over the soak window explain deadline misses."""
    times = psutil.cpu_times()
    values = {"steal_s": float(getattr(times, "steal", 0.0)), "iowait_s": float(getattr(times, "iowait", 0.0)),
              "load1": os.getloadavg()[0]}
    cg = cgroup_dir()
    if cg is not None:
        for line in (cg / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("nr_throttled", "throttled_usec"):
                values[key] = float(value)
    return values


def _counter(s: SoakSample, node: str, key: str) -> float:
    return float(s.counters.get(node, {}).get(key, 0.0))


def _drops(s: SoakSample) -> float:
    per = sum(v for k, v in s.counters.get("perception_node", {}).items() if k.startswith("dropped_"))
    return per + _counter(s, "vla_node", "stale_observation") + _counter(s, "vla_node", "bad_observation")


def summarize_soak(samples: list[SoakSample], episodes: list[dict[str, Any]], warmup_s: float, control_rate_hz: float,
                   crashed: dict[str, int], config: dict[str, Any]) -> dict[str, Any]:
    """The report: RSS growth per node after `warmup_s`, deadline-miss and drop ratios over the same window."""
    if not samples:
        raise ValueError("no soak samples: the stack did not run for one sampling period")
    after = [s for s in samples if s.t >= warmup_s] or samples[-1:]
    first, last = after[0], after[-1]
    n = max(1, min(3, len(after) // 3))
    rss = {}
    for node in last.rss_mb:
        base = float(np.mean([s.rss_mb.get(node, np.nan) for s in after[:n]]))
        end = float(np.mean([s.rss_mb.get(node, np.nan) for s in after[-n:]]))
        rss[node] = {"after_warmup_mb": base, "end_mb": end, "growth_pct": 100 * (end - base) / base if base else 0.0,
                     "max_mb": max(s.rss_mb.get(node, 0.0) for s in samples)}
    window = max(1e-9, last.t - first.t)
    misses = _counter(last, "world_model_node", "deadline_misses") - _counter(first, "world_model_node",
                                                                              "deadline_misses")
    ticks = control_rate_hz * window
    counted = _counter(last, "world_model_node", "control_ticks") - _counter(first, "world_model_node", "control_ticks")
    gaps = [_counter(s, "world_model_node", "control_gap_ms_max") for s in after]
    cpus = float(os.cpu_count() or 1)
    machine = {"steal_pct": 100 * (_counter(last, "machine", "steal_s") - _counter(first, "machine", "steal_s"))
               / (window * cpus),
               "throttled_s": (_counter(last, "machine", "throttled_usec") - _counter(first, "machine",
                                                                                    "throttled_usec")) / 1e6,
               "load1_mean": float(np.mean([_counter(s, "machine", "load1") for s in after]))}
    published = _counter(last, "perception_node", "published") - _counter(first, "perception_node", "published")
    dropped = _drops(last) - _drops(first)
    rate = wilson(sum(bool(e["success"]) for e in episodes), len(episodes))
    growth = max((r["growth_pct"] for r in rss.values()), default=0.0)
    miss_ratio = misses / ticks if ticks else 0.0
    report = {
        "config": config, "duration_s": samples[-1].t if samples else 0.0, "warmup_s": warmup_s,
        "window_s": window, "rss": rss, "rss_growth_max_pct": growth,
        "deadline_misses": misses, "control_ticks": ticks, "deadline_miss_ratio": miss_ratio,
        "control_rate_hz_last": _counter(last, "world_model_node", "control_rate_hz"),
        "control_ticks_counted": counted, "control_rate_achieved_hz": counted / window,
        "control_gap_ms_max": max(gaps, default=0.0), "machine": machine,
        "observations_published": published, "observations_dropped": dropped,
        "drop_ratio": dropped / (published + dropped) if published + dropped else 0.0,
        "vla_skipped_busy": _counter(last, "vla_node", "skipped_busy") - _counter(first, "vla_node", "skipped_busy"),
        "episodes": len(episodes), "successes": rate.successes, "success_rate": rate.value,
        "success_ci95": [rate.low, rate.high], "crashed": crashed,
        "criteria": {"rss_growth_max_pct": RSS_GROWTH_MAX_PCT, "deadline_miss_ratio_max": DEADLINE_MISS_MAX},
        "samples": [{"t": s.t, "rss_mb": s.rss_mb,
                     "deadline_misses": _counter(s, "world_model_node", "deadline_misses")} for s in samples],
    }
    report["passed"] = bool(not crashed and growth <= RSS_GROWTH_MAX_PCT and miss_ratio <= DEADLINE_MISS_MAX)
    return report


def plot_soak(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """`<out>.json` + `<out>.png`: RSS per node and cumulative deadline misses over time."""
    json_path, png_path = write_json(report, out)
    import matplotlib.pyplot as plt

    samples = report["samples"]
    t = [s["t"] / 60 for s in samples]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for node in report["rss"]:
        ax.plot(t, [s["rss_mb"].get(node, np.nan) for s in samples], label=node)
    ax.axvline(report["warmup_s"] / 60, color="grey", ls="--", lw=0.8)
    ax.set_ylabel("RSS (MB)")
    ax.legend(fontsize=7)
    ax.set_title(f"soak {report['duration_s'] / 60:.1f} min: RSS growth max {report['rss_growth_max_pct']:.1f}% "
                 f"after warm-up, success {report['successes']}/{report['episodes']}", fontsize=9)
    bx.plot(t, [s["deadline_misses"] for s in samples], color="#e45756")
    bx.set_ylabel("deadline misses (cum.)")
    bx.set_xlabel("minutes")
    bx.set_title(f"deadline misses {100 * report['deadline_miss_ratio']:.3f}% of control ticks after warm-up",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path
