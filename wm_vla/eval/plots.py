"""Report files: JSON next to a PNG, a bar chart of success rates with 95% Wilson whiskers or a box plot of times."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Bar:
    label: str
    successes: int
    trials: int
    low: float   # 95% CI, as fractions
    high: float
    note: str = ""
    color: str = "#4c78a8"


def write_json(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write `<out>.json` (parents created) and select matplotlib's Agg backend; returns the JSON and PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
    json_path.write_text(json.dumps(report, indent=2))
    return json_path, png_path


def write_json_and_bars(report: dict[str, Any], bars: list[Bar], title: str, out: Path) -> tuple[Path, Path]:
    """Write `<out>.json` (the report) and `<out>.png` (one bar per entry: success % with CI whiskers)."""
    json_path, png_path = write_json(report, out)
    import matplotlib.pyplot as plt

    rates = [b.successes / b.trials if b.trials else 0.0 for b in bars]
    err = [[max(0.0, 100 * (r - b.low)) for r, b in zip(rates, bars)],
           [max(0.0, 100 * (b.high - r)) for r, b in zip(rates, bars)]]
    fig, ax = plt.subplots(figsize=(1.4 + 1.2 * len(bars), 3.6))
    ax.bar([b.label for b in bars], [100 * r for r in rates], yerr=err, capsize=4, color=[b.color for b in bars])
    for i, b in enumerate(bars):
        ax.text(i, 2, f"{b.successes}/{b.trials}" + (f"\n{b.note}" if b.note else ""), ha="center", fontsize=7, color="white")
    ax.set_ylim(0, 105)
    ax.set_ylabel("success % (95% Wilson CI)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path


def write_json_and_boxes(report: dict[str, Any], times_ms: dict[str, list[float]], title: str, out: Path,
                         figsize: tuple[float, float] = (6, 3.5)) -> tuple[Path, Path]:
    """Write `<out>.json` (the report) and `<out>.png` (one box of decision times per entry of `times_ms`)."""
    json_path, png_path = write_json(report, out)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    ax.boxplot(list(times_ms.values()))
    ax.set_xticks(range(1, len(times_ms) + 1), [m.replace("_", " ") for m in times_ms], fontsize=8)
    ax.set_ylabel("decision time, ms")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return json_path, png_path
