"""Decision spacing by observation stamp: at most one decision per period of camera time."""

from __future__ import annotations

import math


class DecisionSpacing:
    """Decide on an observation only if its stamp is at least `period_s` (less `slack_s` for stamp jitter) after the
    last decided one. Checked twice: when the observation arrives, and again when its inference starts. The second
    check matters when inference outlasts the camera period: a frame that arrived while the previous decision ran
    passed the first check (that decision was not done yet), and without it would be decided right after, on a
    frame one inference old, replacing a chunk that had only just started."""

    def __init__(self, period_s: float, slack_s: float = 0.02) -> None:
        if not math.isfinite(period_s) or period_s < 0 or slack_s < 0:
            raise ValueError(f"decision period must be finite and >= 0 s (got {period_s}), slack >= 0 (got {slack_s})")
        self.period_s, self.slack_s = period_s, slack_s
        self.last_s = -math.inf

    def due(self, stamp_s: float) -> bool:
        """True when an observation stamped `stamp_s` may be decided on."""
        return stamp_s >= self.last_s + self.period_s - self.slack_s

    def decided(self, stamp_s: float) -> None:
        self.last_s = stamp_s

    def reset(self) -> None:
        """A new task: the next observation is due."""
        self.last_s = -math.inf
