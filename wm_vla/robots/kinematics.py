"""Forward kinematics and geometric Jacobians of a :class:`RobotModel`.

Poses are 4x4 homogeneous transforms in the root-link (base) frame. Joint positions are given
either as a mapping ``{joint_name: value}`` or as an array ordered like
:attr:`Kinematics.joint_names` (the model's movable joints).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from transforms3d.affines import compose
from transforms3d.axangles import axangle2mat
from transforms3d.euler import euler2mat

from .errors import KinematicsError
from .urdf import Joint, RobotModel

JointPositions = Mapping[str, float] | Sequence[float] | np.ndarray


class Kinematics:
    """FK/Jacobian evaluator; joint origin transforms are precomputed once."""

    def __init__(self, model: RobotModel) -> None:
        self.model = model
        self.joint_names: tuple[str, ...] = model.movable_joints
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        self._origin = {
            j.name: compose(j.origin_xyz, euler2mat(*j.origin_rpy, axes="sxyz"), np.ones(3))
            for j in model.joints.values()
        }
        self._axis = {j.name: np.array(j.axis) for j in model.joints.values()}

    def forward(self, q: JointPositions) -> dict[str, np.ndarray]:
        """Pose of every link; ``q`` must give every movable joint."""
        positions = self._positions(q, self.joint_names)
        poses = {self.model.root_link: np.eye(4)}
        for joint in self.model.joints.values():
            poses[joint.child] = poses[joint.parent] @ self._motion(joint, positions)
        return poses

    def link_pose(self, q: JointPositions, link: str) -> np.ndarray:
        """Pose of ``link``; a mapping ``q`` needs only the joints on the chain to it."""
        return self._walk(q, link)[1]

    def jacobian(
        self, q: JointPositions, link: str, joints: Sequence[str] | None = None
    ) -> np.ndarray:
        """Geometric 6xn Jacobian of ``link``'s origin, rows (vx, vy, vz, wx, wy, wz), base frame.

        Columns follow ``joints`` (default: the movable joints on the chain to ``link``); a joint
        that is not on that chain gets a zero column.
        """
        frames, pose = self._walk(q, link)
        names = tuple(frames) if joints is None else tuple(joints)
        jac = np.zeros((6, len(names)))
        for col, name in enumerate(names):
            if name not in self._index:
                raise KinematicsError(f"robot '{self.model.name}' has no movable joint '{name}'")
            frame = frames.get(name)
            if frame is None:
                continue
            axis = frame[:3, :3] @ self._axis[name]
            if self.model.joints[name].type == "prismatic":
                jac[:3, col] = axis
            else:
                jac[:3, col] = np.cross(axis, pose[:3, 3] - frame[:3, 3])
                jac[3:, col] = axis
        return jac

    def link_positions_batch(self, q: np.ndarray, joints: Sequence[str], link: str) -> np.ndarray:
        """Base-frame origins of ``link`` for N configurations at once: ``q`` is (N, len(joints)).

        Vectorised over N (transforms3d works one pose at a time); chain joints not in ``joints`` stay at 0.
        """
        q = np.asarray(q, dtype=float)
        if q.ndim != 2 or q.shape[1] != len(joints):
            raise KinematicsError(f"expected q of shape (N, {len(joints)}), got {q.shape}")
        column = {name: i for i, name in enumerate(joints)}
        unknown = sorted(set(joints) - set(self._index))
        if unknown:
            raise KinematicsError(f"robot '{self.model.name}' has no movable joint(s) {unknown}")
        n = q.shape[0]
        pose = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
        for joint in self.model.chain(self.model.root_link, link):
            pose = pose @ self._origin[joint.name]
            if not joint.movable or joint.name not in column:
                continue
            value = q[:, column[joint.name]]
            axis = self._axis[joint.name]
            motion = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
            if joint.type == "prismatic":
                motion[:, :3, 3] = value[:, None] * axis
            else:  # Rodrigues: I + sin(q) K + (1 - cos(q)) K^2
                k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
                motion[:, :3, :3] = (np.eye(3) + np.sin(value)[:, None, None] * k
                                     + (1 - np.cos(value))[:, None, None] * (k @ k))
            pose = pose @ motion
        return pose[:, :3, 3]

    def _walk(self, q: JointPositions, link: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Base-frame poses of the movable joint frames on the chain to ``link``, and its pose."""
        chain = self.model.chain(self.model.root_link, link)
        positions = self._positions(q, (j.name for j in chain if j.movable))
        frames: dict[str, np.ndarray] = {}
        pose = np.eye(4)
        for joint in chain:
            if joint.movable:
                frames[joint.name] = pose @ self._origin[joint.name]
            pose = pose @ self._motion(joint, positions)
        return frames, pose

    def _motion(self, joint: Joint, positions: Mapping[str, float]) -> np.ndarray:
        """Parent-to-child transform of ``joint`` at its position."""
        origin = self._origin[joint.name]
        if not joint.movable:
            return origin
        value = positions[joint.name]
        motion = np.eye(4)
        if joint.type == "prismatic":
            motion[:3, 3] = self._axis[joint.name] * value
        else:
            motion[:3, :3] = axangle2mat(self._axis[joint.name], value, is_normalized=True)
        return origin @ motion

    def _positions(self, q: JointPositions, needed: Iterable[str]) -> dict[str, float]:
        """Validated positions of the ``needed`` joints."""
        if isinstance(q, Mapping):
            robot = self.model.name
            unknown = sorted(set(q) - set(self._index))
            if unknown:
                raise KinematicsError(f"robot '{robot}' has no movable joint(s) {unknown}")
            needed = list(needed)
            missing = [name for name in needed if name not in q]
            if missing:
                raise KinematicsError(f"robot '{robot}': no position for joint(s) {missing}")
            values = {name: float(q[name]) for name in needed}
        else:
            array = np.asarray(q, dtype=float)
            if array.shape != (len(self.joint_names),):
                raise KinematicsError(
                    f"robot '{self.model.name}': expected {len(self.joint_names)} joint positions "
                    f"ordered as {list(self.joint_names)}, got shape {array.shape}"
                )
            values = {name: float(array[self._index[name]]) for name in needed}
        bad = [name for name, value in values.items() if not np.isfinite(value)]
        if bad:
            raise KinematicsError(f"robot '{self.model.name}': non-finite position for {bad}")
        return values
