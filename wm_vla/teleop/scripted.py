"""A scripted operator: the arm expert's plan (wm_vla.sim.arm_expert) played as joystick input.

For tests and unattended data collection through the real teleop path: the expert plans its waypoints on a replica
of the sim episode (same seed and task family, no rendering); each call maps the measured joint positions (forward
kinematics on the URDF) to joystick axes/buttons that steer the tool towards the next waypoint, as an operator would.
"""

from __future__ import annotations

import numpy as np

from wm_vla.robots import Kinematics, RobotProfile
from wm_vla.sim.arm_expert import ArmExpert
from wm_vla.sim.arm_world import down_rotation
from wm_vla.sim.registry import make_world
from wm_vla.teleop.inputs import JoyMapping


class ExpertJoystick:
    """`joy(q)` -> (axes, buttons) of a Joy message for joint positions `q` (action order)."""

    def __init__(self, profile: RobotProfile, seed: int, family: str | tuple[str, ...] | None = None,
                 mapping: JoyMapping | None = None, max_linear: float = 0.15, max_angular: float = 0.8,
                 gain: float = 4.0) -> None:
        world = make_world("arm", render=False)
        try:
            world.reset(seed, family=family)
            self.instruction = world.task.instruction
            self.waypoints = ArmExpert(world, np.random.default_rng([int(seed), 1])).waypoints  # type: ignore[arg-type]
        finally:
            world.close()
        self.profile, self.mapping = profile, mapping or JoyMapping()
        self.kin = Kinematics(profile.load_model())
        self.max_linear, self.max_angular, self.gain = max_linear, max_angular, gain
        self.index, self.dwell_left, self.gripper = 0, 0, None

    @property
    def finished(self) -> bool:
        return self.index >= len(self.waypoints) - 1 and self.dwell_left == 0

    def twist(self, q: np.ndarray) -> tuple[np.ndarray, int]:
        """Normalised twist (x, y, z, roll, pitch, yaw) towards the current waypoint and a gripper press (+1/-1/0)."""
        arm = dict(zip(self.profile.arm_joints, np.asarray(q, float)[: len(self.profile.arm_joints)]))
        pose = self.kin.link_pose(arm, self.profile.tool_link)  # type: ignore[arg-type]
        tcp = pose[:3, 3]
        wp = self.waypoints[self.index]
        if self.index < len(self.waypoints) - 1 and np.linalg.norm(wp.pos - tcp) < wp.tol:
            if self.dwell_left == 0 and wp.dwell:
                self.dwell_left = wp.dwell
            self.dwell_left = max(0, self.dwell_left - 1)
            if self.dwell_left == 0:
                self.index += 1
                wp = self.waypoints[self.index]
        v = np.clip(self.gain * (wp.pos - tcp), -wp.speed, wp.speed) / self.max_linear
        rel = down_rotation(wp.yaw) @ pose[:3, :3].T
        yaw_err = float(np.arctan2(rel[1, 0], rel[0, 0]))
        yaw_err = (yaw_err + np.pi / 2) % np.pi - np.pi / 2  # the gripper is symmetric under a half turn
        w = np.clip(self.gain * yaw_err, -self.max_angular, self.max_angular) / self.max_angular
        press = 0
        if self.gripper != wp.gripper:
            self.gripper = wp.gripper
            mid = 0.5 * (self.profile.action.low[-1] + self.profile.action.high[-1])
            press = 1 if wp.gripper > mid else -1
        return np.clip(np.r_[v, 0.0, 0.0, w], -1.0, 1.0), press

    def joy(self, q: np.ndarray) -> tuple[list[float], list[int]]:
        twist, press = self.twist(q)
        m = self.mapping
        axes = [0.0] * (max(m.axes) + 1)
        for i, (ax, sign) in enumerate(zip(m.axes, m.signs)):
            if ax >= 0:
                axes[ax] = float(twist[i] * sign)
        buttons = [0] * (max(m.deadman_button, m.open_button, m.close_button) + 1)
        if m.deadman_button >= 0:
            buttons[m.deadman_button] = 1
        if press:
            buttons[m.open_button if press > 0 else m.close_button] = 1
        return axes, buttons
