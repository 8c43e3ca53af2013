"""Device input -> `MotionCommand` (device-independent): normalised Cartesian/body twist in [-1, 1], gripper, deadman.

Joystick (sensor_msgs/Joy from the joy driver): axes -> twist components, a deadman button that must be held,
gripper open/close buttons. Spacemouse (geometry_msgs/Twist from spacenav): the twist scaled by `full_scale`.
Keyboard: each key press moves one axis for `hold_s` (terminal auto-repeat keeps a held key moving).
Leader arm (sensor_msgs/JointState): joint positions by name -> the follower's action vector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from wm_vla.teleop.errors import TeleopConfigError, TeleopInputError

INPUTS = ("keyboard", "joy", "spacemouse", "leader")  # teleop_node's `input` parameter
AXES = ("x", "y", "z", "roll", "pitch", "yaw")  # twist components: linear x/y/z, angular x/y/z


@dataclass(frozen=True)
class MotionCommand:
    """`twist`: (6,) in [-1, 1], fraction of the max linear/angular speed; `gripper`: +1 open, -1 close, 0 keep;
    `enabled`: the operator's deadman (False: teleop does not move the robot)."""

    twist: np.ndarray
    gripper: int = 0
    enabled: bool = True

    @classmethod
    def idle(cls) -> MotionCommand:
        return cls(np.zeros(6), 0, False)


def _finite(values: Sequence[float], what: str) -> np.ndarray:
    v = np.asarray(values, float)
    if not np.all(np.isfinite(v)):
        raise TeleopInputError(f"{what} contains NaN/inf: {list(values)}")
    return v


@dataclass(frozen=True)
class JoyMapping:
    """Joy axes/buttons -> MotionCommand. `axes[i]` is the Joy axis driving twist component AXES[i] (-1: none),
    `signs[i]` flips it; |value| below `deadband` is 0. Defaults: an Xbox pad under the joy driver (left stick
    x/y, right stick vertical z and horizontal yaw, LB deadman, A open, B close)."""

    axes: tuple[int, ...] = (1, 0, 4, -1, -1, 3)
    signs: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    deadband: float = 0.05
    deadman_button: int = 4      # -1: no deadman (always enabled)
    open_button: int = 0
    close_button: int = 1

    def __post_init__(self) -> None:
        if len(self.axes) != 6 or len(self.signs) != 6:
            raise TeleopConfigError(f"joy mapping needs 6 axes and 6 signs ({', '.join(AXES)}), got "
                                    f"{len(self.axes)} and {len(self.signs)}")
        if not 0.0 <= self.deadband < 1.0:
            raise TeleopConfigError(f"deadband must be in [0, 1), got {self.deadband}")

    def command(self, axes: Sequence[float], buttons: Sequence[int]) -> MotionCommand:
        need_axes = max(self.axes) + 1
        need_buttons = max(self.deadman_button, self.open_button, self.close_button) + 1
        if len(axes) < need_axes or len(buttons) < need_buttons:
            raise TeleopInputError(f"joy message has {len(axes)} axes and {len(buttons)} buttons; the mapping uses "
                                   f"{need_axes} axes and {need_buttons} buttons")
        a = _finite(axes, "joy axes")
        twist = np.array([a[i] * s if i >= 0 else 0.0 for i, s in zip(self.axes, self.signs)])
        twist[np.abs(twist) < self.deadband] = 0.0
        grip = (1 if self.open_button >= 0 and buttons[self.open_button]
                else -1 if self.close_button >= 0 and buttons[self.close_button] else 0)
        enabled = self.deadman_button < 0 or bool(buttons[self.deadman_button])
        return MotionCommand(np.clip(twist, -1.0, 1.0), grip, enabled)


def twist_command(linear: Sequence[float], angular: Sequence[float], full_scale: float = 1.0,
                  deadband: float = 0.02) -> MotionCommand:
    """A spacemouse Twist (spacenav: values up to `full_scale`) -> MotionCommand (always enabled)."""
    if not full_scale > 0:
        raise TeleopConfigError(f"full_scale must be positive, got {full_scale}")
    v = np.concatenate([_finite(linear, "twist linear"), _finite(angular, "twist angular")]) / full_scale
    v[np.abs(v) < deadband] = 0.0
    return MotionCommand(np.clip(v, -1.0, 1.0), 0, True)


DEFAULT_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "q": (5, 1.0), "e": (5, -1.0), "i": (4, 1.0), "k": (4, -1.0), "j": (3, 1.0), "l": (3, -1.0)}


@dataclass
class KeyMapping:
    """Keys -> motion: a key moves its axis at `speed` (fraction of max) for `hold_s` after each press; `open_key` /
    `close_key` move the gripper; `stop_key` stops at once. Feed `press(key, now)`, read `command(now)`."""

    keys: Mapping[str, tuple[int, float]] = field(default_factory=lambda: dict(DEFAULT_KEYS))
    speed: float = 0.5
    hold_s: float = 0.15
    open_key: str = "o"
    close_key: str = "c"
    stop_key: str = " "

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.keys.items() if len(k) != 1 or not 0 <= v[0] < 6}
        special = {self.open_key, self.close_key, self.stop_key}
        if bad or special & set(self.keys) or len(special) != 3:
            raise TeleopConfigError(f"key mapping: keys must be single characters on axes 0..5, distinct from the "
                                    f"gripper/stop keys {sorted(special)}; bad: {bad}")
        self._until = np.zeros(6)
        self._sign = np.zeros(6)
        self._gripper = 0

    def press(self, key: str, now: float) -> bool:
        """Register one key press; False for a key that means nothing."""
        if key == self.stop_key:
            self._until[:] = 0.0
            return True
        if key in (self.open_key, self.close_key):
            self._gripper = 1 if key == self.open_key else -1
            return True
        if key not in self.keys:
            return False
        axis, sign = self.keys[key]
        self._until[axis], self._sign[axis] = now + self.hold_s, sign
        return True

    def command(self, now: float) -> MotionCommand:
        active = self._until > now
        twist = np.where(active, self._sign * self.speed, 0.0)
        grip, self._gripper = self._gripper, 0
        return MotionCommand(twist, grip, bool(active.any() or grip))


def leader_targets(names: Sequence[str], positions: Sequence[float], action_names: Sequence[str],
                   aliases: Mapping[str, str] | None = None) -> dict[str, float]:
    """A leader arm's JointState -> {follower action name: position}; `aliases` maps leader -> follower joint names.
    Every action joint must be present (else TeleopInputError)."""
    if len(names) != len(positions):
        raise TeleopInputError(f"leader joint state has {len(names)} names and {len(positions)} positions")
    aliases = aliases or {}
    values = {aliases.get(n, n): float(p) for n, p in zip(names, positions)}
    missing = [n for n in action_names if n not in values]
    if missing:
        raise TeleopInputError(f"leader joint state lacks {missing} (has {list(names)})")
    bad = [n for n in action_names if not math.isfinite(values[n])]
    if bad:
        raise TeleopInputError(f"leader joint state has non-finite positions for {bad}")
    return {n: values[n] for n in action_names}
