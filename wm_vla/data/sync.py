"""As-of alignment of streams by stamp: the latest sample at or before a reference time, within a bounded age."""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from wm_vla.data.errors import FrameError

T = TypeVar("T")


@dataclass
class Stamped(Generic[T]):
    stamp: float
    value: T


class AsOfBuffer(Generic[T]):
    """Recent samples of one stream, sorted by stamp (seconds); `as_of(t)` pairs a reference time with one."""

    def __init__(self, max_age_s: float, capacity: int = 64, slack_s: float = 1e-3) -> None:
        self.max_age_s, self.slack_s = max_age_s, slack_s
        self._items: deque[Stamped[T]] = deque(maxlen=capacity)

    def add(self, stamp: float, value: T) -> None:
        if self._items and stamp < self._items[-1].stamp:  # out of order: keep sorted
            items = list(self._items)
            bisect.insort(items, Stamped(stamp, value), key=lambda s: s.stamp)
            self._items = deque(items, maxlen=self._items.maxlen)
        else:
            self._items.append(Stamped(stamp, value))

    def latest(self) -> Stamped[T] | None:
        return self._items[-1] if self._items else None

    def as_of(self, t: float) -> Stamped[T]:
        """The newest sample with stamp <= t (+ slack); FrameError('no_state' | 'stale_state') otherwise."""
        best = None
        for item in reversed(self._items):
            if item.stamp <= t + self.slack_s:
                best = item
                break
        if best is None:
            raise FrameError("no_state", f"no sample at or before {t:.3f} s")
        if t - best.stamp > self.max_age_s:
            raise FrameError("stale_state", f"newest sample before {t:.3f} s is {1e3 * (t - best.stamp):.0f} ms old "
                                            f"(max {1e3 * self.max_age_s:.0f} ms)")
        return best
