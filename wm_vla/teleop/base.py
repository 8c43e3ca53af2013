"""Mobile-base / quadruped teleoperation: MotionCommand -> body velocity within the profile's limits."""

from __future__ import annotations

import numpy as np

from wm_vla.robots import RobotProfile
from wm_vla.teleop.errors import TeleopConfigError
from wm_vla.teleop.inputs import MotionCommand

# body velocity name -> twist component (inputs.AXES order)
COMPONENT = {"vx": 0, "vy": 1, "vz": 2, "wx": 3, "wy": 4, "wz": 5}


class BaseTeleop:
    """Full deflection = the action bound in that direction; a released deadman commands zero velocity."""

    def __init__(self, profile: RobotProfile, scale: float = 1.0) -> None:
        if profile.action.kind != "body_velocity":
            raise TeleopConfigError(f"robot {profile.name!r} is not velocity-commanded")
        unknown = [n for n in profile.action.names if n not in COMPONENT]
        if unknown or not 0 < scale <= 1:
            raise TeleopConfigError(f"unsupported velocity names {unknown} or scale {scale} (0 < scale <= 1)")
        self.names = tuple(profile.action.names)
        self.cols = [COMPONENT[n] for n in self.names]
        self.low, self.high = np.asarray(profile.action.low, float), np.asarray(profile.action.high, float)
        self.scale = scale

    def step(self, cmd: MotionCommand) -> np.ndarray:
        if not cmd.enabled:
            return np.zeros(len(self.names))
        t = cmd.twist[self.cols] * self.scale
        return np.clip(np.where(t >= 0, t * self.high, -t * self.low), self.low, self.high)
