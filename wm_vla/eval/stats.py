"""Small statistics helpers for honest success rates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


@dataclass(frozen=True)
class Paired:
    """Two configurations run on the same episodes (seeds): discordant pairs and the exact McNemar test."""

    both: int
    only_a: int
    only_b: int
    neither: int
    p_value: float  # two-sided exact McNemar (binomial on the discordant pairs); 1.0 when there are none

    def to_dict(self) -> dict[str, float | int]:
        return {"both": self.both, "only_a": self.only_a, "only_b": self.only_b, "neither": self.neither,
                "mcnemar_p": self.p_value}


def paired(a: list[bool], b: list[bool]) -> Paired:
    """Compare per-episode successes of two configurations on the same seeds, in the same order."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same episodes, got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    both = sum(1 for x, y in zip(a, b) if x and y)
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n if n else 0.5
    return Paired(both, only_a, only_b, len(a) - both - only_a - only_b, min(1.0, 2 * tail))


def median_ratio_ci(numerator: Sequence[float], denominator: Sequence[float], level: float = 0.95,
                    resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of median(numerator) / median(denominator), the two samples resampled
    independently (e.g. decision times over ROS and in-process). It covers the sampling noise of one run only, not
    a machine's drift between runs. (nan, nan) when either sample is empty."""
    num, den = np.asarray(numerator, float), np.asarray(denominator, float)
    if num.size == 0 or den.size == 0:
        return float("nan"), float("nan")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    top = np.median(rng.choice(num, (resamples, num.size)), axis=1)
    bottom = np.median(rng.choice(den, (resamples, den.size)), axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(top / bottom, [tail, 100 - tail])
    return float(low), float(high)
