"""Safety filter in the command path (always on): every command goes through `SafetyFilter.filter`.

Position robots (arms): clamp to URDF joint limits, bound the step by velocity (and optionally acceleration)
limits, keep the tool inside the workspace box (forward kinematics), and HOLD the measured position on e-stop,
stale observations or an exhausted chunk -- never zeros. Velocity robots (quadruped twist): clamp to the twist
limits, bound the change by acceleration limits, and command an explicit zero twist on stop.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wm_vla.robots import Kinematics, RobotProfile
from wm_vla.runtime.errors import InvalidJointStateError, SafetyError

POSITION, VELOCITY = "position", "velocity"


@dataclass
class SafetyLimits:
    names: tuple[str, ...]
    mode: str                                   # position | velocity
    low: np.ndarray
    high: np.ndarray
    max_velocity: np.ndarray | None = None      # position mode: units/s per dim
    max_acceleration: np.ndarray | None = None  # units/s^2 per dim (position: of the commanded motion; velocity: of the twist)
    max_obs_age_s: float = 0.2
    workspace_low: np.ndarray | None = None
    workspace_high: np.ndarray | None = None

    @classmethod
    def from_profile(cls, profile: RobotProfile, velocity_scale: float = 1.0,
                     max_acceleration: float | None = None, max_obs_age_s: float | None = None) -> SafetyLimits:
        """Limits from the profile (action bounds = URDF limits) and the URDF velocity limits."""
        names = tuple(profile.action.names)
        low, high = np.asarray(profile.action.low, float), np.asarray(profile.action.high, float)
        age = (profile.max_obs_age_ms / 1e3) if max_obs_age_s is None else max_obs_age_s
        accel = None if max_acceleration is None else np.full(len(names), float(max_acceleration))
        if profile.action.kind == "body_velocity":
            return cls(names, VELOCITY, low, high, None, accel, age)
        vel = profile.load_model().joint_limits(names).velocity * velocity_scale
        ws = profile.workspace
        return cls(names, POSITION, low, high, vel, accel, age,
                   None if ws is None else np.asarray(ws.low, float), None if ws is None else np.asarray(ws.high, float))


@dataclass
class SafeCommand:
    """What to send now: `values` (None: nothing to send yet), `state` track | hold | stop, and why."""

    values: np.ndarray | None
    state: str
    reasons: tuple[str, ...] = ()


def check_joint_state(names: Sequence[str], positions: Sequence[float], expected: Sequence[str]) -> np.ndarray:
    """Positions of the `expected` joints, in that order, from a JointState; raises InvalidJointStateError."""
    if len(names) != len(positions):
        raise InvalidJointStateError("length_mismatch", f"joint state has {len(names)} names but "
                                                        f"{len(positions)} positions")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in expected if n not in index]
    if missing:
        raise InvalidJointStateError("missing_joints", f"joint state lacks joint(s) {missing}")
    q = np.array([positions[index[n]] for n in expected], dtype=np.float64)
    bad = [n for n, v in zip(expected, q) if not math.isfinite(v)]
    if bad:
        raise InvalidJointStateError("non_finite", f"non-finite position for joint(s) {bad}")
    return q


class SafetyFilter:
    """Stateful filter: feed it e-stop, observation stamps and measured state; call `filter` every control tick."""

    def __init__(self, limits: SafetyLimits, control_dt: float, kinematics: tuple[Kinematics, Sequence[str], str]
                 | None = None) -> None:
        if not control_dt > 0:
            raise SafetyError("config", f"control_dt must be positive, got {control_dt}")
        self.lim, self.dt = limits, control_dt
        self.kin = kinematics  # (kinematics, arm joint names (in action names), tool link) for workspace checks
        self.e_stop = False
        self.last_obs: float | None = None
        self.measured: np.ndarray | None = None
        self.last: np.ndarray | None = None
        self.last_vel = np.zeros(len(limits.names))
        self.last_t: float | None = None
        self.step_dt = control_dt
        self.held: np.ndarray | None = None
        self.held_reason = ""
        self.counts: Counter[str] = Counter()

    @classmethod
    def for_profile(cls, profile: RobotProfile, control_dt: float | None = None, **limit_kwargs: float | None
                    ) -> SafetyFilter:
        limits = SafetyLimits.from_profile(profile, **limit_kwargs)  # type: ignore[arg-type]
        kin = None
        if limits.mode == POSITION and limits.workspace_low is not None and profile.tool_link:
            kin = (Kinematics(profile.load_model()), tuple(profile.arm_joints), profile.tool_link)
        return cls(limits, control_dt or 1.0 / profile.control_rate_hz, kin)

    def reset(self) -> None:
        """A new task (e.g. after the robot was re-positioned): forget the commanded, measured and held positions,
        so nothing is commanded until a fresh joint state arrives (the e-stop and the watchdog stay)."""
        self.measured = self.last = self.held = self.last_t = None
        self.held_reason = ""
        self.last_vel = np.zeros(len(self.lim.names))

    def set_e_stop(self, engaged: bool) -> None:
        self.e_stop = bool(engaged)

    def observation(self, stamp: float) -> None:
        """A fresh observation arrived (its stamp feeds the stale-observation watchdog)."""
        self.last_obs = stamp if self.last_obs is None else max(self.last_obs, stamp)

    def joint_state(self, positions: np.ndarray) -> None:
        """Measured positions in action order (validate with `check_joint_state` first)."""
        q = np.asarray(positions, float)
        if q.shape != (len(self.lim.names),) or not np.all(np.isfinite(q)):
            raise InvalidJointStateError("bad_state", f"expected {len(self.lim.names)} finite positions, got {q}")
        self.measured = q

    def filter(self, target: np.ndarray | None, now: float) -> SafeCommand:
        """The command to send at `now` for the executor's `target` (None: no chunk covers now)."""
        why = self._stop_reason(target, now)
        if why is not None:
            return self._stop(why, now)
        assert target is not None
        t = np.asarray(target, float)
        if t.shape != (len(self.lim.names),) or not np.all(np.isfinite(t)):
            return self._stop("bad_target", now)
        reasons = []
        resumable = self.held_reason in ("e_stop", "stale_observation", "no_chunk")
        if self.held is not None and resumable and self.measured is not None and self.lim.mode == POSITION:
            self.last, self.last_vel = self.measured.copy(), np.zeros(len(t))  # resume from where the robot is
        clamped = np.clip(t, self.lim.low, self.lim.high)
        if not np.array_equal(clamped, t):
            reasons.append("joint_limit" if self.lim.mode == POSITION else "twist_limit")
        # steps between ticks (e.g. a chunk's first command sent at once) share the period's velocity budget
        self.step_dt = self.dt if self.last_t is None else min(max(now - self.last_t, 0.0), self.dt)
        out = self._rate_limit(clamped, reasons)
        if out is None:
            return self._stop("no_state", now)
        if self.lim.mode == POSITION and not self._in_workspace(out):
            return self._stop("workspace", now)
        self.held, self.held_reason = None, ""
        self._emit(out, now)
        self.counts.update(reasons)
        return SafeCommand(out.copy(), "track", tuple(reasons))

    # ----- internals -----
    def _stop_reason(self, target: np.ndarray | None, now: float) -> str | None:
        if self.e_stop:
            return "e_stop"
        if self.last_obs is None or now - self.last_obs > self.lim.max_obs_age_s:
            return "stale_observation"
        if target is None:
            return "no_chunk"
        return None

    def _stop(self, reason: str, now: float) -> SafeCommand:
        self.counts[reason] += 1
        if self.lim.mode == VELOCITY:
            self._emit(np.zeros(len(self.lim.names)), now)
            return SafeCommand(np.zeros(len(self.lim.names)), "stop", (reason,))
        if self.held_reason != reason:  # a new hold (or a new cause, e.g. stale -> no chunk) latches afresh
            self.held, self.held_reason = None, reason
        if self.held is None:  # e-stop / stale / no chunk: where the robot is; a refused target: the last command
            at_robot = reason not in ("workspace", "bad_target") and self.measured is not None
            self.held = self.measured if at_robot else (self.last if self.last is not None else self.measured)
        if self.held is None:
            return SafeCommand(None, "hold", (reason,))
        self._emit(self.held, now)
        return SafeCommand(self.held.copy(), "hold", (reason,))

    def _emit(self, out: np.ndarray, now: float) -> None:
        if self.last is not None and (self.last_t is None or now - self.last_t >= self.dt / 2):
            self.last_vel = (out - self.last) / (self.dt if self.last_t is None else max(now - self.last_t, self.dt))
        self.last, self.last_t = out.copy(), now

    def _rate_limit(self, target: np.ndarray, reasons: list[str]) -> np.ndarray | None:
        lim = self.lim
        if lim.mode == VELOCITY:
            if lim.max_acceleration is None:
                return target
            ref = np.zeros(len(target)) if self.last is None else self.last  # a base starts at rest
            step = lim.max_acceleration * self.step_dt
            out = np.clip(target, ref - step, ref + step)
            if not np.array_equal(out, target):
                reasons.append("acceleration_limit")
            return out
        ref = self.last if self.last is not None else self.measured
        if ref is None:
            return None
        dt = max(self.step_dt, 1e-9)
        vel = (target - ref) / dt
        vmax = np.full(len(target), np.inf) if lim.max_velocity is None else lim.max_velocity.copy()
        if lim.max_acceleration is not None:  # brake in time: |v| <= sqrt(2 a |error|), and |dv| <= a dt
            a_dt = lim.max_acceleration * dt  # discrete stopping bound: sum of v - k a dt over the steps left
            vmax = np.minimum(vmax, -a_dt / 2 + np.sqrt(a_dt**2 / 4 + 2 * lim.max_acceleration * np.abs(target - ref)))
            dv = lim.max_acceleration * dt
            lo, hi = self.last_vel - dv, self.last_vel + dv
            vel_a = np.clip(vel, lo, hi)
            if not np.allclose(vel_a, vel):
                reasons.append("acceleration_limit")
            vel = vel_a
        vel_v = np.clip(vel, -vmax, vmax)
        if not np.allclose(vel_v, vel):
            reasons.append("velocity_limit")
        return np.clip(ref + vel_v * dt, lim.low, lim.high)

    def _in_workspace(self, q: np.ndarray) -> bool:
        """Tool inside the box, or (when already outside, e.g. after a reset) not moving further out."""
        excess = self.workspace_excess(q)
        return excess == 0.0 or (self.last is not None and excess <= self.workspace_excess(self.last))

    def workspace_excess(self, q: np.ndarray) -> float:
        """Metres the tool link is outside the workspace box at positions `q` (0 inside, or without a box)."""
        if self.kin is None or self.lim.workspace_low is None or self.lim.workspace_high is None:
            return 0.0
        kin, joints, tool = self.kin
        cols = [self.lim.names.index(j) for j in joints]
        tcp = kin.link_positions_batch(np.asarray(q, float)[cols][None], joints, tool)[0]
        return float(np.sum(np.clip(tcp - self.lim.workspace_high, 0, None) + np.clip(self.lim.workspace_low - tcp, 0, None)))
