"""`wm-vla sim check`: scripted-expert success rates per task family, with Wilson intervals, JSON + PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from wm_vla.eval.plots import Bar, write_json_and_bars
from wm_vla.eval.stats import wilson
from wm_vla.sim.registry import make_world
from wm_vla.sim.rollout import run_expert_episode


def check_expert(world_name: str, episodes: int, seed: int = 0, noise: float = 0.0,
                 progress: bool = True) -> dict[str, Any]:
    """Run the expert on seeds seed..seed+episodes-1 (no rendering) and tally outcomes."""
    if episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {episodes}")
    world = make_world(world_name, render=False)
    per_family: dict[str, list[bool]] = {}
    events: dict[str, int] = {}
    modes: dict[str, int] = {}
    for s in tqdm(range(seed, seed + episodes), desc=f"expert {world_name}", unit="ep", disable=not progress):
        rec = run_expert_episode(world, s, noise=noise, keep_frames=False)
        per_family.setdefault(world.task.family, []).append(rec.success)
        events[rec.event] = events.get(rec.event, 0) + 1
        modes[rec.mode] = modes.get(rec.mode, 0) + 1
    outcomes = [x for v in per_family.values() for x in v]
    return {
        "world": world_name, "seeds": [seed, seed + episodes - 1], "noise": noise,
        "success": wilson(sum(outcomes), len(outcomes)).to_dict(),
        "by_family": {f: wilson(sum(v), len(v)).to_dict() for f, v in sorted(per_family.items())},
        "events": events, "expert_modes": modes,
    }


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write `<out>.json` and a bar chart `<out>.png` (success per family, 95% CI whiskers)."""
    rows = [(f, report["by_family"][f]) for f in report["by_family"]] + [("all", report["success"])]
    bars = [Bar(name, r["successes"], r["trials"], r["ci95_low"], r["ci95_high"]) for name, r in rows]
    title = f"{report['world']} expert, noise={report['noise']}, seeds {report['seeds'][0]}-{report['seeds'][1]}"
    return write_json_and_bars(report, bars, title, out)
