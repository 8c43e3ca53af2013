"""Arm teleoperation: a Cartesian twist moves a TCP target pose; damped least-squares differential IK on the URDF
(wm_vla.robots.Kinematics) turns it into joint targets within the joint limits; the gripper opens/closes.

The target pose integrates the twist (rotations with transforms3d) and is clamped to the profile's workspace box;
the IK tracks it from the current joint targets. When the target is unreachable (joint limits, singularity) it is
pulled back to the pose reached, so the arm never winds up towards a pose it cannot get to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from transforms3d.axangles import axangle2mat, mat2axangle

from wm_vla.robots import Kinematics, RobotProfile
from wm_vla.teleop.errors import TeleopConfigError, TeleopInputError, TeleopStateError
from wm_vla.teleop.inputs import MotionCommand

FRAMES = ("base", "tool")


@dataclass(frozen=True)
class ArmTeleopConfig:
    max_linear: float = 0.15        # m/s at full deflection
    max_angular: float = 0.8        # rad/s
    damping: float = 0.05           # DLS lambda
    iterations: int = 4
    orientation_weight: float = 0.5
    frame: str = "base"             # twist expressed in the base frame or the tool frame
    rewind_m: float = 0.02          # target further than this from the reached pose is pulled back

    def __post_init__(self) -> None:
        if self.frame not in FRAMES:
            raise TeleopConfigError(f"frame must be one of {FRAMES}, got {self.frame!r}")
        if not (self.max_linear > 0 and self.max_angular > 0 and self.damping > 0 and self.iterations >= 1):
            raise TeleopConfigError(f"speeds, damping and iterations must be positive: {self}")


class ArmTeleop:
    """Joint-position targets (the profile's action vector) from MotionCommands; `reset(q)` from the measured state."""

    def __init__(self, profile: RobotProfile, cfg: ArmTeleopConfig | None = None) -> None:
        if profile.action.kind != "joint_position" or not profile.tool_link or not profile.arm_joints:
            raise TeleopConfigError(f"robot {profile.name!r} is not an arm with a tool link and arm joints")
        self.cfg = cfg or ArmTeleopConfig()
        self.profile = profile
        self.kin = Kinematics(profile.load_model())
        self.names = tuple(profile.action.names)
        self.low, self.high = np.asarray(profile.action.low, float), np.asarray(profile.action.high, float)
        self.arm_cols = [self.names.index(j) for j in profile.arm_joints]
        grip = [g for g in profile.gripper_joints if g in self.names]
        self.grip_col = self.names.index(grip[0]) if grip else None
        ws = profile.workspace
        self.ws = (np.asarray(ws.low, float), np.asarray(ws.high, float)) if ws and ws.frame == profile.base_link else None
        self.q: np.ndarray | None = None
        self.target_pos = np.zeros(3)
        self.target_rot = np.eye(3)

    def _arm(self, q: np.ndarray) -> dict[str, float]:
        return dict(zip(self.profile.arm_joints, q[self.arm_cols]))

    def tool_pose(self, q: np.ndarray) -> np.ndarray:
        return self.kin.link_pose(self._arm(q), self.profile.tool_link)  # type: ignore[arg-type]

    def reset(self, q: np.ndarray) -> None:
        """Start from joint positions `q` (action order), e.g. the measured state or the policy's last command."""
        q = np.asarray(q, float)
        if q.shape != (len(self.names),) or not np.all(np.isfinite(q)):
            raise TeleopInputError(f"expected {len(self.names)} finite joint positions {list(self.names)}, got {q}")
        self.q = np.clip(q, self.low, self.high)
        pose = self.tool_pose(self.q)
        self.target_pos, self.target_rot = pose[:3, 3].copy(), pose[:3, :3].copy()

    def step(self, cmd: MotionCommand, dt: float) -> np.ndarray:
        """Joint targets after applying `cmd` for `dt` seconds (the current targets when the deadman is released)."""
        if self.q is None:
            raise TeleopStateError("teleop has no joint state yet: reset() with the measured positions first")
        if not cmd.enabled:
            return self.q.copy()
        v = cmd.twist[:3] * self.cfg.max_linear
        w = cmd.twist[3:] * self.cfg.max_angular
        if self.cfg.frame == "tool":
            v, w = self.target_rot @ v, self.target_rot @ w
        self.target_pos = self.target_pos + v * dt
        if self.ws is not None:
            self.target_pos = np.clip(self.target_pos, *self.ws)
        angle = float(np.linalg.norm(w)) * dt
        if angle > 0:
            self.target_rot = axangle2mat(w / np.linalg.norm(w), angle) @ self.target_rot
        self._solve()
        if cmd.gripper and self.grip_col is not None:
            self.q[self.grip_col] = self.high[self.grip_col] if cmd.gripper > 0 else self.low[self.grip_col]
        return self.q.copy()

    def _solve(self) -> None:
        assert self.q is not None
        cfg, cols = self.cfg, self.arm_cols
        lam2 = cfg.damping ** 2
        for _ in range(cfg.iterations):
            pose = self.tool_pose(self.q)
            err_p = self.target_pos - pose[:3, 3]
            axis, angle = mat2axangle(self.target_rot @ pose[:3, :3].T)
            err = np.concatenate([err_p, cfg.orientation_weight * np.asarray(axis) * angle])
            if np.linalg.norm(err) < 1e-5:
                break
            jac = self.kin.jacobian(self._arm(self.q), self.profile.tool_link, self.profile.arm_joints)  # type: ignore[arg-type]
            jac[3:] *= cfg.orientation_weight
            dq = jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), err)
            self.q[cols] = np.clip(self.q[cols] + dq, self.low[cols], self.high[cols])
        reached = self.tool_pose(self.q)
        if np.linalg.norm(self.target_pos - reached[:3, 3]) > cfg.rewind_m:  # unreachable: do not wind up
            self.target_pos = reached[:3, 3] + (self.target_pos - reached[:3, 3]) * (
                cfg.rewind_m / np.linalg.norm(self.target_pos - reached[:3, 3]))
            if self.ws is not None:
                self.target_pos = np.clip(self.target_pos, *self.ws)

    def set_targets(self, values: Mapping[str, float]) -> np.ndarray:
        """Leader-arm mode: joint targets by name (clamped to the limits); the Cartesian target follows."""
        if self.q is None:
            raise TeleopStateError("teleop has no joint state yet: reset() with the measured positions first")
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise TeleopInputError(f"unknown joint(s) {unknown}; the arm has {list(self.names)}")
        q = self.q.copy()
        for name, value in values.items():
            q[self.names.index(name)] = value
        self.reset(q)
        assert self.q is not None
        return self.q.copy()
