"""Recorded robot commands -> the commanded action vector at any time (what the operator / stack really sent).

- `joint_trajectory` (JTC): the latest trajectory started at or before t is in effect; its points are
  interpolated at their reach times (header stamp 0 = the message's bag time), holding the first/last point.
- `position_commands` (forward controllers): the latest array at or before t holds until replaced.
- `twist` (cmd_vel, Twist or TwistStamped): the latest command, or zero once older than `twist_timeout_s`.
Action index i of a chunk decided at t occupies the slot [t + i/fps, t + (i+1)/fps): its recorded value is the
command in effect at the end of that slot (a command sent some latency after the slot started still counts);
for a trajectory, the target it reaches at that time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wm_vla.data.bags.align import asof_indices
from wm_vla.data.bags.reader import Record
from wm_vla.data.bags.topics import CommandSource
from wm_vla.data.errors import BagMessageError

NS = 1_000_000_000
TWIST_FIELDS = {"vx": ("linear", "x"), "vy": ("linear", "y"), "vz": ("linear", "z"),
                "wx": ("angular", "x"), "wy": ("angular", "y"), "wz": ("angular", "z")}
INTERFACES = ("joint_trajectory", "position_commands", "twist")


def _duration_ns(d: Any) -> int:
    return int(d.sec) * NS + int(d.nanosec)


@dataclass
class CommandTrack:
    """One command stream mapped onto the action dims it covers."""

    source: CommandSource
    action_names: tuple[str, ...]
    records: list[Record]
    period_ns: int
    twist_timeout_s: float = 0.5

    def __post_init__(self) -> None:
        if self.source.interface not in INTERFACES:
            raise BagMessageError(f"command interface must be one of {INTERFACES}, got {self.source.interface!r}")
        self.stamps = np.array([r.stamp_ns for r in self.records], np.int64)

    @property
    def covered(self) -> list[int]:
        """Action columns this stream commands."""
        if self.source.interface == "twist":
            return [i for i, n in enumerate(self.action_names) if n in TWIST_FIELDS]
        names = set(self.source.joints)
        if self.source.interface == "joint_trajectory":
            for r in self.records[:1]:
                names |= set(r.msg.joint_names)
        return [i for i, n in enumerate(self.action_names) if n in names]

    def values_at(self, times_ns: np.ndarray) -> np.ndarray:
        """(N, A): commanded values at each time for the covered dims, NaN elsewhere / before any command."""
        times = np.asarray(times_ns, np.int64)
        out = np.full((times.size, len(self.action_names)), np.nan)
        idx = asof_indices(self.stamps, times, np.iinfo(np.int64).max // 2)
        for n, (t, i) in enumerate(zip(times, idx)):
            if i < 0:
                continue
            msg = self.records[i].msg
            if self.source.interface == "joint_trajectory":
                self._trajectory(msg, self.stamps[i], t + 1, out[n])
            elif self.source.interface == "position_commands":
                self._array(msg, out[n])
            elif t - self.stamps[i] <= self.twist_timeout_s * NS:
                self._twist(msg, out[n])
            else:
                out[n, self.covered] = 0.0
        return out

    def _trajectory(self, msg: Any, start_ns: int, t_ns: int, row: np.ndarray) -> None:
        if not msg.points:
            return
        reach = np.array([_duration_ns(p.time_from_start) for p in msg.points], np.float64)  # after start
        pos = np.array([np.asarray(p.positions, float) for p in msg.points])
        if pos.ndim != 2 or pos.shape[1] != len(msg.joint_names):
            raise BagMessageError(f"{self.source.topic}: trajectory points must each have {len(msg.joint_names)} positions")
        for j, name in enumerate(msg.joint_names):
            if name in self.action_names:
                row[self.action_names.index(name)] = np.interp(float(t_ns - start_ns), reach, pos[:, j])

    def _array(self, msg: Any, row: np.ndarray) -> None:
        data = np.asarray(msg.data, float)
        if data.size != len(self.source.joints):
            raise BagMessageError(f"{self.source.topic}: {data.size} values for joints {list(self.source.joints)}")
        for name, value in zip(self.source.joints, data):
            if name in self.action_names:
                row[self.action_names.index(name)] = value

    def _twist(self, msg: Any, row: np.ndarray) -> None:
        twist = getattr(msg, "twist", msg)  # TwistStamped or Twist
        for i, name in enumerate(self.action_names):
            if name in TWIST_FIELDS:
                part, axis = TWIST_FIELDS[name]
                row[i] = getattr(getattr(twist, part), axis)


def command_chunks(tracks: list[CommandTrack], decisions_ns: np.ndarray, horizon: int, action_dim: int,
                   fps: float, ends_ns: np.ndarray | None = None) -> np.ndarray:
    """(N, H, A) recorded chunks: action i of decision t = the commands in effect just before t + (i+1)/fps (NaN:
    none, or past `ends_ns`, the end of each decision's episode)."""
    step = int(round(NS / fps))
    times = (np.asarray(decisions_ns, np.int64)[:, None] + step * np.arange(1, horizon + 1)[None] - 1)
    late = times >= (np.asarray(ends_ns, np.int64)[:, None] if ends_ns is not None else np.iinfo(np.int64).max)
    times = times.reshape(-1)
    out = np.full((times.size, action_dim), np.nan)
    for track in tracks:
        vals = track.values_at(times)
        have = ~np.isnan(vals)
        out[have] = vals[have]
    out[late.reshape(-1)] = np.nan
    return out.reshape(len(decisions_ns), horizon, action_dim)
