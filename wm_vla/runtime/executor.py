"""Chunk executor: streams the chosen action chunk at the control rate, timed from its observation stamp.

Action i of a chunk is the target for [stamp + i*dt, stamp + (i+1)*dt), dt = 1/policy rate. A chunk that
arrives after its inference latency starts at the first action not yet in the past (older ones are dropped and
counted). At a seam the new chunk is blended in linearly over `blend_s` from the target the old chunk would have
given; the safety filter then bounds every step by the velocity limits. Times are seconds (any clock, one clock).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wm_vla.runtime.errors import ChunkError


@dataclass
class ExecutorConfig:
    action_dt: float            # seconds per chunk action (1 / policy rate)
    action_dim: int
    max_actions: int | None = None  # use at most this many actions of a chunk (None: all H)
    blend_s: float = 0.0        # seam blend duration (0: switch at once; the safety filter bounds the step)
    interpolate: bool = False   # linear interpolation between actions (False: zero-order hold, like the sim eval)

    def validate(self) -> ExecutorConfig:
        if not (self.action_dt > 0 and math.isfinite(self.action_dt)):
            raise ChunkError(f"action_dt must be a positive number of seconds, got {self.action_dt}")
        if self.action_dim < 1 or (self.max_actions is not None and self.max_actions < 1) or self.blend_s < 0:
            raise ChunkError("action_dim and max_actions must be >= 1 and blend_s >= 0")
        return self


@dataclass
class _Chunk:
    actions: np.ndarray   # (H, A)
    stamp: float
    start: float          # time the executor received it (seam blend starts here)


class ChunkExecutor:
    """Holds the active chunk; `target(now)` gives the action to command now (None: no chunk covers `now`)."""

    def __init__(self, config: ExecutorConfig) -> None:
        self.cfg = config.validate()
        self.active: _Chunk | None = None
        self.previous: _Chunk | None = None
        self.dropped_actions = 0   # actions skipped because they were already in the past on arrival
        self.rejected_chunks = 0
        self.accepted_chunks = 0

    def submit(self, chunk: np.ndarray, stamp: float, now: float) -> int:
        """Make `chunk` (H, A) computed from the observation at `stamp` active; returns the first action index used."""
        arr = np.asarray(chunk, dtype=np.float64)
        try:
            if arr.ndim != 2 or arr.shape[1] != self.cfg.action_dim or arr.shape[0] < 1:
                raise ChunkError(f"expected a chunk of shape (H, {self.cfg.action_dim}), got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ChunkError("chunk has non-finite actions")
            if self.active is not None and stamp < self.active.stamp:
                raise ChunkError(f"chunk from an older observation ({stamp:.3f} s < active {self.active.stamp:.3f} s)")
            arr = arr[: self.cfg.max_actions]
            first = self._index(stamp, now)
            if first >= len(arr):
                raise ChunkError(f"chunk entirely in the past: {now - stamp:.3f} s after its observation, it covers "
                                 f"{len(arr) * self.cfg.action_dt:.3f} s")
        except ChunkError:
            self.rejected_chunks += 1
            raise
        self.dropped_actions += max(first, 0)
        self.previous, self.active = self.active, _Chunk(arr, float(stamp), float(now))
        self.accepted_chunks += 1
        return max(first, 0)

    def target(self, now: float) -> np.ndarray | None:
        """Blended target at `now`, or None when the active chunk is exhausted (the caller holds)."""
        if self.active is None:
            return None
        new = self._at(self.active, now)
        if new is None:
            return None
        if self.previous is not None and self.cfg.blend_s > 0:
            w = (now - self.active.start) / self.cfg.blend_s
            old = self._at(self.previous, now)
            if w < 1 and old is not None:
                return (1 - max(w, 0.0)) * old + max(w, 0.0) * new
        return new

    def remaining(self, now: float) -> int:
        """Actions of the active chunk not yet started at `now`."""
        if self.active is None:
            return 0
        return max(0, len(self.active.actions) - max(self._index(self.active.stamp, now), 0) - 1)

    def clear(self) -> None:
        """Forget the chunks (e.g. on e-stop or reset): nothing streams until the next submit."""
        self.active = self.previous = None

    def _index(self, stamp: float, now: float) -> int:
        return math.floor((now - stamp) / self.cfg.action_dt + 1e-9)

    def _at(self, chunk: _Chunk, now: float) -> np.ndarray | None:
        pos = (now - chunk.stamp) / self.cfg.action_dt
        i = max(math.floor(pos + 1e-9), 0)
        if i >= len(chunk.actions):
            return None
        if not self.cfg.interpolate or i + 1 >= len(chunk.actions):
            return chunk.actions[i].copy()
        frac = min(max(pos - i, 0.0), 1.0)
        return (1 - frac) * chunk.actions[i] + frac * chunk.actions[i + 1]
