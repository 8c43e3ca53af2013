"""Live latency budget: track per-stage decision latency and degrade / recover the decision mode with hysteresis.

A node asks the governor for the current `Mode` before each decision (how many candidates K to sample, whether to
run GPC-OPT, whether to rank with the world model at all), runs the decision, and reports its per-stage times with
`record()`. When the decision p99 over the rolling window exceeds the budget, the governor steps one level down the
ladder, in this fixed order:

  1. shrink K (each configured K level in turn, largest first),
  2. skip GPC-OPT (at the smallest K),
  3. pass the policy sample through (K = 1, no world model).

It steps back up one level when the p99 of a full window at the current level is below `recover_fraction` of the
budget. Hysteresis: a level change clears the window and starts a dwell of `dwell` decisions without changes; a
recovery that has to be undone within `backoff_window` decisions doubles the dwell before the next recovery attempt
(up to `max_dwell`; degrading never waits longer than `dwell`), so a level that does not fit is not retried every
few decisions. Every change is logged and kept
in `history`; `diagnostics()` gives key/values for diagnostic_msgs/KeyValue (the ROS nodes publish them).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wm_vla.runtime.errors import LatencyConfigError

log = logging.getLogger(__name__)
TOTAL = "total"


@dataclass(frozen=True)
class Mode:
    """One rung of the degradation ladder."""

    level: int
    k: int
    gpc_opt: bool
    rank: bool

    @property
    def name(self) -> str:
        if not self.rank:
            return "passthrough"
        return f"K={self.k}" + (" +GPC-OPT" if self.gpc_opt else "")


@dataclass
class GovernorConfig:
    budget_ms: float                       # decision p99 budget
    k_levels: tuple[int, ...] = (16, 8, 4)  # candidate counts, largest first (shrunk in this order)
    gpc_opt: bool = False                  # the full mode runs GPC-OPT (skipped once K is at its smallest)
    window: int = 50                       # decisions in the rolling window the p99 is taken over
    min_samples: int = 20                  # decisions needed at a level before it is judged
    recover_fraction: float = 0.6          # step up when p99 <= recover_fraction * budget
    dwell: int = 20                        # decisions after a change before the next one
    max_dwell: int = 640                   # ceiling of the doubled dwell after failed recoveries
    backoff_window: int = 100              # a recovery undone within this many decisions doubles the dwell
    percentile: float = 99.0

    def validate(self) -> GovernorConfig:
        if not (math.isfinite(self.budget_ms) and self.budget_ms > 0):
            raise LatencyConfigError(f"budget_ms must be a positive number, got {self.budget_ms!r}")
        ks = tuple(self.k_levels)
        if not ks or any(not isinstance(k, int) or k < 1 for k in ks) or list(ks) != sorted(set(ks), reverse=True):
            raise LatencyConfigError(f"k_levels must be distinct integers >= 1, largest first, got {ks!r}")
        if not 0 < self.recover_fraction < 1:
            raise LatencyConfigError(f"recover_fraction must be in (0, 1), got {self.recover_fraction}")
        if not 1 <= self.min_samples <= self.window:
            raise LatencyConfigError(f"need 1 <= min_samples ({self.min_samples}) <= window ({self.window})")
        if self.dwell < 0 or self.max_dwell < self.dwell or self.backoff_window < 0:
            raise LatencyConfigError("need dwell >= 0, max_dwell >= dwell and backoff_window >= 0")
        if not 50 <= self.percentile <= 100:
            raise LatencyConfigError(f"percentile must be in [50, 100], got {self.percentile}")
        return self


def ladder(cfg: GovernorConfig) -> list[Mode]:
    """The modes from full (level 0) to passthrough (last level), in degradation order."""
    modes = [Mode(i, k, cfg.gpc_opt, True) for i, k in enumerate(cfg.k_levels)]
    if cfg.gpc_opt:
        modes.append(Mode(len(modes), cfg.k_levels[-1], False, True))
    modes.append(Mode(len(modes), 1, False, False))
    return modes


@dataclass(frozen=True)
class Change:
    """One mode change: at decision `decision`, from one level to another, why, and the p99 that caused it."""

    decision: int
    old: Mode
    new: Mode
    reason: str
    p99_ms: float
    stage_p99_ms: dict[str, float] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return "degrade" if self.new.level > self.old.level else "recover"

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "direction": self.direction, "from": self.old.name, "to": self.new.name,
                "reason": self.reason, "p99_ms": round(self.p99_ms, 3),
                "stage_p99_ms": {k: round(v, 3) for k, v in self.stage_p99_ms.items()}}


class LatencyGovernor:
    """Tracks per-stage latency of decisions and picks the decision mode that keeps the p99 within budget."""

    def __init__(self, cfg: GovernorConfig, logger: logging.Logger | None = None) -> None:
        self.cfg = cfg.validate()
        self.modes = ladder(cfg)
        self.level = 0
        self.decisions = 0
        self.history: list[Change] = []
        self.log = logger or log
        self._window: dict[str, deque[float]] = {}
        self._since_change = 0
        self._recover_dwell = cfg.dwell  # doubled after each recovery that did not hold
        self._last_recovery: int | None = None

    @property
    def mode(self) -> Mode:
        return self.modes[self.level]

    def record(self, stage_ms: Mapping[str, float]) -> Change | None:
        """Report one decision's stage times (ms); `total` is the decision time (default: the sum of the stages).

        Returns the mode change this decision triggered, if any (also logged and appended to `history`).
        """
        values = {str(k): float(v) for k, v in stage_ms.items()}
        if not values or any(not math.isfinite(v) or v < 0 for v in values.values()):
            raise LatencyConfigError(f"stage times must be finite, non-negative ms, got {dict(stage_ms)!r}")
        values.setdefault(TOTAL, sum(values.values()))
        for name, v in values.items():
            self._window.setdefault(name, deque(maxlen=self.cfg.window)).append(v)
        self.decisions += 1
        self._since_change += 1
        return self._judge()

    def percentile(self, stage: str = TOTAL) -> float:
        """The configured percentile of a stage over the window (nan with no samples)."""
        data = self._window.get(stage)
        return float(np.percentile(np.asarray(data), self.cfg.percentile)) if data else math.nan

    def stage_percentiles(self) -> dict[str, float]:
        return {name: self.percentile(name) for name in self._window}

    def _judge(self) -> Change | None:
        cfg = self.cfg
        n = len(self._window[TOTAL])
        if n < cfg.min_samples:
            return None
        p99 = self.percentile()
        if p99 > cfg.budget_ms and self.level < len(self.modes) - 1 and self._since_change >= cfg.dwell:
            if self._last_recovery is not None and self.decisions - self._last_recovery <= cfg.backoff_window:
                self._recover_dwell = min(cfg.max_dwell, max(1, 2 * self._recover_dwell))  # it did not hold
            self._last_recovery = None
            return self._change(self.level + 1, f"p{cfg.percentile:g} {p99:.1f} ms > budget {cfg.budget_ms:.1f} ms",
                                p99)
        if (self.level > 0 and n >= cfg.window and self._since_change >= self._recover_dwell
                and p99 <= cfg.recover_fraction * cfg.budget_ms):
            self._last_recovery = self.decisions
            return self._change(self.level - 1, f"p{cfg.percentile:g} {p99:.1f} ms <= {cfg.recover_fraction:g} x "
                                f"budget {cfg.budget_ms:.1f} ms over {n} decisions", p99)
        if self._last_recovery is not None and self.decisions - self._last_recovery > cfg.backoff_window:
            self._recover_dwell, self._last_recovery = cfg.dwell, None  # the recovery held: forget the backoff
        return None

    def _change(self, level: int, reason: str, p99: float) -> Change:
        change = Change(self.decisions, self.mode, self.modes[level], reason, p99, self.stage_percentiles())
        self.level = level
        self.history.append(change)
        self._window.clear()
        self._since_change = 0
        self.log.warning("latency governor: %s %s -> %s (%s)", change.direction, change.old.name, change.new.name,
                         reason)
        return change

    def diagnostics(self) -> list[tuple[str, str]]:
        """Key/values for a diagnostic_msgs/DiagnosticStatus: mode, level, budget, per-stage window percentiles."""
        pairs = [("mode", self.mode.name), ("level", f"{self.level}/{len(self.modes) - 1}"),
                 ("k", str(self.mode.k)), ("gpc_opt", str(self.mode.gpc_opt).lower()),
                 ("rank", str(self.mode.rank).lower()), ("budget_ms", f"{self.cfg.budget_ms:.1f}"),
                 ("decisions", str(self.decisions)), ("changes", str(len(self.history))),
                 ("recover_dwell", str(self._recover_dwell))]
        pairs += [(f"{name}_p{self.cfg.percentile:g}_ms", f"{v:.2f}") for name, v in self.stage_percentiles().items()]
        if self.history:
            last = self.history[-1]
            pairs.append(("last_change", f"{last.direction} {last.old.name} -> {last.new.name} at decision "
                                         f"{last.decision}: {last.reason}"))
        return pairs

    @property
    def degraded(self) -> bool:
        return self.level > 0

    def trace(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.history]


def governor_config_from_mapping(data: Mapping[str, Any]) -> GovernorConfig:
    """A GovernorConfig from plain YAML/JSON/ROS-parameter data (unknown keys are an error)."""
    known = set(GovernorConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise LatencyConfigError(f"unknown governor setting(s) {unknown}; allowed: {sorted(known)}")
    if "budget_ms" not in data:
        raise LatencyConfigError("governor settings need budget_ms")
    values = dict(data)
    if "k_levels" in values:
        ks = values["k_levels"]
        if not isinstance(ks, Sequence) or isinstance(ks, str):
            raise LatencyConfigError(f"k_levels must be a list of integers, got {ks!r}")
        values["k_levels"] = tuple(ks)
    try:
        return GovernorConfig(**values).validate()
    except TypeError as exc:
        raise LatencyConfigError(f"invalid governor settings: {exc}") from exc

