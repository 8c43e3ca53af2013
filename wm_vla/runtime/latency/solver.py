"""Budget solver: the configuration of best expected quality whose measured p99 fits the latency budget.

Search space: backend x precision x K x denoising steps x execution horizon. The device profile is the prior: its
backends (in order) and precisions, the margin (`p99 * (1 + margin) <= budget`) and the memory share the models may
use. Quality comes from closed-loop eval results (`wm-vla eval sim` JSONs: success rate per K at the eval's
denoising steps and execution horizon) where one matches the configuration exactly, else from a documented proxy
(`proxy_quality`). Every configuration that is not chosen has a reason: unsupported, unavailable here, over budget,
a chunk too short for the decision time, or simply lower quality than the chosen one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wm_vla.runtime.errors import LatencyConfigError
from wm_vla.runtime.latency.devices import BACKEND_PRECISIONS, PRECISIONS, DeviceProfile

PRECISION_PENALTY = {"fp32": 0.0, "bf16": 0.005, "fp16": 0.005, "int8": 0.03, "fp8": 0.02, "fp4": 0.05}
K_SATURATION = 64            # ranking gains are assumed flat beyond this many candidates
DEFAULT_GAIN_PER_DOUBLING = 0.02
STEPS_PENALTY = 0.15         # success lost when sampling with 0 steps (scaled by the missing fraction of steps)
HORIZON_PENALTY = 0.05       # success lost when executing the whole chunk open loop (scaled by exec/H)
MAX_DUTY = 0.8               # decisions may keep the CPU/GPU busy at most this share of the time


@dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str
    k: int
    steps: int
    exec_horizon: int

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision} K={self.k} steps={self.steps} exec={self.exec_horizon}"

    @property
    def measure_key(self) -> tuple[str, str, int, int]:
        """Latency does not depend on the execution horizon: one measurement serves all of them."""
        return self.backend, self.precision, self.k, self.steps


@dataclass
class Verdict:
    candidate: Candidate
    quality: float
    quality_source: str
    p99_ms: float | None = None
    p50_ms: float | None = None
    peak_rss_mb: float | None = None
    fits: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        c = self.candidate
        return {"backend": c.backend, "precision": c.precision, "k": c.k, "steps": c.steps,
                "exec_horizon": c.exec_horizon, "quality": round(self.quality, 4),
                "quality_source": self.quality_source,
                "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "fits": self.fits, "reason": self.reason}


@dataclass
class QualityModel:
    """Eval success rates by (K, steps, exec_horizon), and the proxy for everything else."""

    measured: dict[tuple[int, int, int], tuple[float, str]] = field(default_factory=dict)
    trained_steps: int = 10
    horizon: int = 16

    @classmethod
    def from_eval_files(cls, paths: Iterable[str | Path], trained_steps: int, horizon: int) -> QualityModel:
        """Read `wm-vla eval sim/gym` reports; rows of the main policy, single or GPC-RANK (no oracle), by K."""
        counts: dict[tuple[int, int, int], list[tuple[int, int, str]]] = {}
        for p in paths:
            path = Path(p)
            try:
                data = json.loads(path.read_text())
                steps, exec_h = int(data["denoise_steps"]), int(data["exec_horizon"])
                rows = data["configs"]
                for row in rows:
                    if row.get("name") in ("single", "rank") and row.get("policy", "main") == "main":
                        counts.setdefault((int(row["k"]), steps, exec_h), []).append(
                            (int(row["successes"]), int(row["episodes"]), path.name))
            except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise LatencyConfigError(f"{path}: not a `wm-vla eval` report: {type(exc).__name__}: {exc}") from exc
        measured = {}
        for key, entries in counts.items():
            succ, eps = sum(e[0] for e in entries), sum(e[1] for e in entries)
            measured[key] = (succ / eps, f"eval {', '.join(sorted({e[2] for e in entries}))} ({eps} episodes)")
        return cls(measured, trained_steps, horizon)

    def _base_and_gain(self) -> tuple[float, float]:
        """Success at K=1 and gain per doubling of K, fitted to the eval rows (defaults without any)."""
        pts = [(math.log2(min(k, K_SATURATION)), v[0]) for (k, _s, _e), v in self.measured.items()]
        if not pts:
            return 0.5, DEFAULT_GAIN_PER_DOUBLING
        singles = [q for x, q in pts if x == 0]
        base = sum(singles) / len(singles) if singles else min(q for _x, q in pts)
        ranked = [(x, q) for x, q in pts if x > 0]
        if not ranked:
            return base, DEFAULT_GAIN_PER_DOUBLING
        gain = sum((q - base) * x for x, q in ranked) / sum(x * x for x, _q in ranked)  # least squares through base
        return base, max(0.0, gain)

    def quality(self, c: Candidate) -> tuple[float, str]:
        hit = self.measured.get((c.k, c.steps, c.exec_horizon))
        if hit is not None:
            return hit[0] - PRECISION_PENALTY.get(c.precision, 0.0), hit[1] + (
                f" - {c.precision} penalty" if PRECISION_PENALTY.get(c.precision) else "")
        return proxy_quality(c, *self._base_and_gain(), self.trained_steps, self.horizon), "proxy"


def proxy_quality(c: Candidate, base: float, gain: float, trained_steps: int, horizon: int) -> float:
    """Expected success without an eval result (a heuristic, documented in docs/runtime.md):

    base + gain * log2(min(K, 64)) - STEPS_PENALTY * max(0, 1 - steps / trained_steps)
         - HORIZON_PENALTY * exec_horizon / H - PRECISION_PENALTY[precision]
    base and gain (per doubling of K) are fitted to the eval results when there are any (else 0.5 and 0.02).
    """
    q = base + gain * math.log2(min(c.k, K_SATURATION))
    q -= STEPS_PENALTY * max(0.0, 1.0 - c.steps / trained_steps)
    q -= HORIZON_PENALTY * c.exec_horizon / horizon
    return q - PRECISION_PENALTY.get(c.precision, 0.0)


def search_space(device: DeviceProfile, ks: Sequence[int], steps: Sequence[int], exec_horizons: Sequence[int],
                 horizon: int, available: dict[str, str | None]) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """The candidates worth measuring, and (what, why) for every backend/precision left out up front.

    `available[backend]` is None when the backend can run here, else the reason it cannot.
    """
    if not ks or not steps or not exec_horizons:
        raise LatencyConfigError("K, steps and exec_horizon lists must not be empty")
    bad = [e for e in exec_horizons if not 1 <= e <= horizon]
    if bad:
        raise LatencyConfigError(f"execution horizons {bad} are outside 1..{horizon} (the chunk length)")
    skipped: list[tuple[str, str]] = []
    out: list[Candidate] = []
    for backend in device.backends:
        why = available.get(backend, "not available here")
        if why:
            skipped.append((backend, f"unavailable here: {why}"))
            continue
        # tensorrt: every precision is worth a line ("this device does not run fp8" is what users ask about)
        considered = set(PRECISIONS) if backend == "tensorrt" else {*device.precisions, *BACKEND_PRECISIONS[backend]}
        for p in sorted(considered, key=PRECISIONS.index):
            if p not in device.precisions:
                skipped.append((f"{backend} {p}", f"{device.name} does not run {p}"))
            elif p not in BACKEND_PRECISIONS[backend]:
                skipped.append((f"{backend} {p}", f"not implemented by our {backend} backend "
                                                  f"({'/'.join(BACKEND_PRECISIONS[backend])})"))
            else:
                out += [Candidate(backend, p, k, s, e) for k in ks for s in steps for e in exec_horizons]
    return out, skipped


def judge(verdicts: list[Verdict], budget_ms: float, device: DeviceProfile, policy_rate_hz: float) -> None:
    """Set fits/reason on every measured verdict (budget with margin, chunk duration, duty cycle, memory)."""
    limit = budget_ms / (1.0 + device.budget_margin)
    mem_limit = device.memory_gb * 1024 * device.memory_fraction
    for v in verdicts:
        if v.p99_ms is None:
            v.fits, v.reason = False, v.reason or "not measured"
            continue
        chunk_ms = 1e3 * v.candidate.exec_horizon / policy_rate_hz
        if v.p99_ms > limit:
            v.fits, v.reason = False, (f"p99 {v.p99_ms:.1f} ms x (1 + margin {device.budget_margin:g}) = "
                                       f"{v.p99_ms * (1 + device.budget_margin):.1f} ms > budget {budget_ms:g} ms")
        elif v.p99_ms > chunk_ms:
            v.fits, v.reason = False, (f"p99 {v.p99_ms:.1f} ms > the {chunk_ms:.0f} ms an executed chunk of "
                                       f"{v.candidate.exec_horizon} actions lasts at {policy_rate_hz:g} Hz")
        elif v.p50_ms is not None and v.p50_ms > MAX_DUTY * chunk_ms:
            v.fits, v.reason = False, (f"a decision every {chunk_ms:.0f} ms at p50 {v.p50_ms:.1f} ms keeps the "
                                       f"device > {MAX_DUTY:.0%} busy")
        elif v.peak_rss_mb is not None and v.peak_rss_mb > mem_limit:
            v.fits, v.reason = False, (f"peak host RSS {v.peak_rss_mb:.0f} MB > {device.memory_fraction:g} x "
                                       f"{device.memory_gb:g} GB")
        else:
            v.fits, v.reason = True, "fits"


def ranked(verdicts: list[Verdict]) -> list[Verdict]:
    """Fitting verdicts, best first: quality, then lower p99, then fewer candidates and steps (cheaper)."""
    fitting = [v for v in verdicts if v.fits]
    return sorted(fitting, key=lambda v: (-round(v.quality, 6), v.p99_ms or 0.0, v.candidate.k, v.candidate.steps))
