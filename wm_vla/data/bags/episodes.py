"""Split a bag's time line into episodes: explicit time ranges, gaps in a stream, or a marker topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wm_vla.data.errors import EpisodeSpecError

NS = 1_000_000_000
END_WORDS = ("end", "stop", "done", "episode_end", "success", "failure")


@dataclass(frozen=True)
class Episode:
    index: int
    start_ns: int
    end_ns: int            # exclusive

    def contains(self, t_ns: np.ndarray) -> np.ndarray:
        return (np.asarray(t_ns) >= self.start_ns) & (np.asarray(t_ns) < self.end_ns)


def parse_ranges(text: str) -> list[tuple[float, float]]:
    """'0:30,45.5:90' (seconds from the bag start) -> [(0, 30), (45.5, 90)]."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        a, sep, b = part.partition(":")
        try:
            lo, hi = float(a), float(b)
        except ValueError:
            raise EpisodeSpecError(f"episode range must be START:END in seconds, got {part!r}") from None
        if not sep or not 0 <= lo < hi:
            raise EpisodeSpecError(f"episode range must have 0 <= START < END, got {part!r}")
        out.append((lo, hi))
    if not out:
        raise EpisodeSpecError(f"no episode range in {text!r}")
    return out


def by_ranges(ranges: list[tuple[float, float]], bag_start_ns: int) -> list[Episode]:
    ranges = sorted(ranges)
    for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
        if lo < hi:
            raise EpisodeSpecError(f"episode ranges overlap ({hi} > {lo})")
    return [Episode(i, bag_start_ns + int(lo * NS), bag_start_ns + int(hi * NS)) for i, (lo, hi) in enumerate(ranges)]


def by_gaps(stamps_ns: np.ndarray, gap_s: float) -> list[Episode]:
    """A new episode wherever consecutive stamps of a stream are more than `gap_s` apart; each episode lasts one
    typical frame period past its last stamp (the command sent after the last frame still belongs to it)."""
    if gap_s <= 0:
        raise EpisodeSpecError(f"episode gap must be > 0 s, got {gap_s}")
    t = np.sort(np.asarray(stamps_ns, np.int64))
    if t.size == 0:
        return []
    diffs = np.diff(t)
    cuts = np.flatnonzero(diffs > gap_s * NS) + 1
    inside = diffs[(diffs > 0) & (diffs <= gap_s * NS)]
    period = int(np.median(inside)) if inside.size else int(gap_s * NS)
    return [Episode(i, int(b[0]), int(b[-1]) + period) for i, b in enumerate(np.split(t, cuts))]


def marker_is_end(msg: Any) -> bool:
    """std_msgs/Bool False or a String like 'end'/'stop' ends an episode; anything else starts one."""
    data = getattr(msg, "data", None)
    if isinstance(data, (bool, np.bool_)):
        return not bool(data)
    return isinstance(data, str) and data.strip().lower() in END_WORDS


def by_markers(markers: list[tuple[int, bool]], bag_end_ns: int) -> list[Episode]:
    """(stamp, is_end) markers in time order -> episodes from each start marker to the next marker (or bag end)."""
    out: list[Episode] = []
    start: int | None = None
    for t, is_end in sorted(markers):
        if start is not None and t > start:
            out.append(Episode(len(out), start, t))
        start = None if is_end else t
    if start is not None and bag_end_ns >= start:
        out.append(Episode(len(out), start, bag_end_ns + 1))
    return out
