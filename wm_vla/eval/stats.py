"""Small statistics helpers for honest success rates."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """k successes out of n, with a Wilson score interval."""

    successes: int
    trials: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")

    def __str__(self) -> str:
        return f"{self.successes}/{self.trials} = {100 * self.value:.1f}% (95% CI {100 * self.low:.1f}-{100 * self.high:.1f}%)"

    def to_dict(self) -> dict[str, float | int]:
        return {"successes": self.successes, "trials": self.trials, "rate": self.value, "ci95_low": self.low, "ci95_high": self.high}


def wilson(successes: int, trials: int, z: float = 1.959964) -> Rate:
    """Wilson score interval (good at rates near 0 or 1 and small n)."""
    if trials <= 0:
        return Rate(successes, trials, float("nan"), float("nan"))
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], got {successes}")
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return Rate(successes, trials, 0.0 if successes == 0 else low, 1.0 if successes == trials else high)
