"""Arm tabletop: wm_arm6 on a table with three coloured cubes, push targets, a bowl and an obstacle post."""

from __future__ import annotations

import mujoco
import numpy as np

from wm_vla.sim.scene import (
    OPTICAL_TO_MUJOCO_CAMERA_QUAT,
    add_default_lights_and_floor,
    add_position_actuator,
    body_geoms,
    load_robot_spec,
    look_at_quat,
    touching,
    urdf_path,
)
from wm_vla.sim.tasks import ARM_COLOURS, COLOURS, Task
from wm_vla.sim.world import SimWorld

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_roll", "wrist_pitch", "flange_roll")
FINGER_JOINTS = ("finger_left_joint", "finger_right_joint")
ROBOT_BODIES = ("base_link", "shoulder_link", "upper_arm_link", "forearm_link", "wrist_roll_link",
                "wrist_pitch_link", "flange_link", "gripper_base_link", "finger_left_link", "finger_right_link")
GRIPPER_BODIES = ("gripper_base_link", "finger_left_link", "finger_right_link")
CUBE_HALF = 0.02
POST_RADIUS, POST_HEIGHT = 0.02, 0.14
BOWL_INNER_HALF, BOWL_WALL, BOWL_HEIGHT = 0.05, 0.008, 0.035
TARGETS = {"left": np.array([0.42, 0.25]), "right": np.array([0.42, -0.25])}
TARGET_RADIUS = 0.05
PUSH_TOLERANCE = 0.03
HOME_TCP = np.array([0.14, 0.0, 0.25])
# Spawn region of the cubes (x, y) and the bowl (x, |y|), metres in the robot base frame (= world).
CUBE_REGION = ((0.40, 0.52), (-0.10, 0.10))
BOWL_REGION = ((0.24, 0.30), (0.20, 0.26))
ARM_KP = (300.0, 300.0, 200.0, 60.0, 60.0, 40.0)
GRIPPER_OPEN, GRIPPER_CLOSED = 0.04, 0.0


def down_rotation(yaw: float) -> np.ndarray:
    """Tool orientation pointing straight down, rotated by `yaw` about the world z axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return rz @ np.diag([-1.0, 1.0, -1.0])


def wrap_half_pi(yaw: float) -> float:
    """Equivalent gripper yaw in [-pi/2, pi/2) (the gripper is symmetric under a half turn)."""
    return float((yaw + np.pi / 2) % np.pi - np.pi / 2)


class ArmTabletopWorld(SimWorld):
    """Tabletop manipulation: touch / push / place tasks over red, green and blue cubes."""

    name = "arm"
    profile_name = "arm"
    camera_names = ("front", "wrist")

    # ----- model -----
    def _build_spec(self) -> mujoco.MjSpec:
        spec = load_robot_spec(urdf_path("wm_arm6.urdf"), (0.7, 0.7, 0.72, 1.0))
        spec.modelname = "wm_arm_tabletop"
        for body in spec.bodies:
            body.gravcomp = 1.0
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
        add_default_lights_and_floor(spec, (0.72, 0.6, 0.45), 1.0)
        for name in GRIPPER_BODIES[1:]:
            for geom in spec.body(name).geoms:
                geom.friction = (1.5, 0.02, 0.002)
                geom.condim = 4
                geom.rgba = (0.25, 0.25, 0.28, 1.0)
        spec.body("tcp_link").add_site(name="tcp", size=(0.004, 0, 0), rgba=(1, 0, 0, 0))
        spec.body("wrist_camera_optical_frame").add_camera(name="wrist", quat=OPTICAL_TO_MUJOCO_CAMERA_QUAT, fovy=80)
        front_pos = np.array([0.78, 0.0, 0.46])
        spec.worldbody.add_camera(name="front", pos=front_pos, quat=look_at_quat(front_pos, np.array([0.34, 0.0, 0.0])), fovy=58)
        for joint, kp in zip(ARM_JOINTS, ARM_KP):
            j = spec.joint(joint)
            j.armature = 0.01
            add_position_actuator(spec, joint, kp=kp, kv=0.12 * kp ** 0.5 * 4, ctrlrange=tuple(j.range))
        for joint in FINGER_JOINTS:
            add_position_actuator(spec, joint, kp=400.0, kv=10.0, ctrlrange=(0.0, GRIPPER_OPEN))
        for colour in ARM_COLOURS:
            cube = spec.worldbody.add_body(name=f"cube_{colour}", pos=(0.4, 0.0, CUBE_HALF))
            cube.add_freejoint(name=f"cube_{colour}_joint")
            cube.add_geom(name=f"cube_{colour}", type=mujoco.mjtGeom.mjGEOM_BOX, size=(CUBE_HALF,) * 3, mass=0.05,
                          rgba=COLOURS[colour], friction=(1.2, 0.02, 0.002), condim=4)
        for side, xy in TARGETS.items():
            spec.worldbody.add_geom(name=f"target_{side}", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=(TARGET_RADIUS, 0.0008, 0),
                                    pos=(xy[0], xy[1], 0.0008), rgba=(0.95, 0.95, 0.95, 1), contype=0, conaffinity=0)
        post = spec.worldbody.add_body(name="post", pos=(0.3, 0.0, POST_HEIGHT / 2))
        post.add_geom(name="post", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=(POST_RADIUS, POST_HEIGHT / 2, 0),
                      rgba=(0.15, 0.15, 0.15, 1))
        bowl = spec.worldbody.add_body(name="bowl", pos=(0.27, 0.23, 0.0))
        bowl_rgba = (0.55, 0.35, 0.75, 1.0)
        outer = BOWL_INNER_HALF + BOWL_WALL
        bowl.add_geom(name="bowl_bottom", type=mujoco.mjtGeom.mjGEOM_BOX, size=(outer, outer, 0.002), pos=(0, 0, 0.002), rgba=bowl_rgba)
        for i, (dx, dy) in enumerate(((1, 0), (-1, 0), (0, 1), (0, -1))):
            size = (BOWL_WALL / 2, outer, BOWL_HEIGHT / 2) if dx else (outer, BOWL_WALL / 2, BOWL_HEIGHT / 2)
            pos = (dx * (BOWL_INNER_HALF + BOWL_WALL / 2), dy * (BOWL_INNER_HALF + BOWL_WALL / 2), BOWL_HEIGHT / 2)
            bowl.add_geom(name=f"bowl_wall{i}", type=mujoco.mjtGeom.mjGEOM_BOX, size=size, pos=pos, rgba=bowl_rgba)
        return spec

    def __init__(self, config=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        m = self.model
        self._arm_qadr = np.array([m.joint(j).qposadr[0] for j in ARM_JOINTS])
        self._arm_vadr = np.array([m.joint(j).dofadr[0] for j in ARM_JOINTS])
        self._finger_qadr = np.array([m.joint(j).qposadr[0] for j in FINGER_JOINTS])
        self._cube_qadr = {c: m.joint(f"cube_{c}_joint").qposadr[0] for c in ARM_COLOURS}
        self._cube_geoms = {c: {m.geom(f"cube_{c}").id} for c in ARM_COLOURS}
        self._robot_geoms = body_geoms(m, list(ROBOT_BODIES))
        self._gripper_geoms = body_geoms(m, list(GRIPPER_BODIES))
        self._arm_geoms = self._robot_geoms - self._gripper_geoms
        self._post_geoms = {m.geom("post").id}
        self._floor_geoms = {m.geom("floor").id}
        self._tcp_site = m.site("tcp").id
        self._ik_data = mujoco.MjData(m)
        self.home_q = self.solve_ik(np.array([0.0, 0.2, 1.3, 0.0, 1.6, 0.0]), HOME_TCP, down_rotation(0.0), iters=200)[0]

    # ----- kinematics used by experts -----
    def solve_ik(self, q_init: np.ndarray, pos: np.ndarray, rot: np.ndarray, iters: int = 30,
                 damping: float = 0.03) -> tuple[np.ndarray, float]:
        """Damped least-squares IK of the TCP site; returns joint angles and the residual position error."""
        m, d = self.model, self._ik_data
        q = np.array(q_init, dtype=float)
        lo, hi = self.action_low[:6], self.action_high[:6]
        jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        target_quat, cur_quat, err_quat, rot_err = np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(3)
        mujoco.mju_mat2Quat(target_quat, rot.flatten())
        pos_err = np.inf
        for _ in range(iters):
            d.qpos[self._arm_qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err_p = pos - d.site_xpos[self._tcp_site]
            mujoco.mju_mat2Quat(cur_quat, d.site_xmat[self._tcp_site])
            mujoco.mju_negQuat(cur_quat, cur_quat)
            mujoco.mju_mulQuat(err_quat, target_quat, cur_quat)
            mujoco.mju_quat2Vel(rot_err, err_quat, 1.0)
            pos_err = float(np.linalg.norm(err_p))
            if pos_err < 1e-4 and np.linalg.norm(rot_err) < 1e-3:
                break
            mujoco.mj_jacSite(m, d, jacp, jacr, self._tcp_site)
            jac = np.vstack([jacp[:, self._arm_vadr], jacr[:, self._arm_vadr]])
            err = np.concatenate([err_p, 0.5 * rot_err])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * np.eye(6), err)
            q = np.clip(q + dq, lo, hi)
        return q, pos_err

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.site_xpos[self._tcp_site].copy(), self.data.site_xmat[self._tcp_site].reshape(3, 3).copy()

    def arm_q(self) -> np.ndarray:
        return self.data.qpos[self._arm_qadr].copy()

    def cube_pos(self, colour: str) -> np.ndarray:
        return self.data.qpos[self._cube_qadr[colour]: self._cube_qadr[colour] + 3].copy()

    # ----- episode -----
    def _place(self, rng: np.random.Generator, task: Task) -> dict[str, np.ndarray]:
        for _attempt in range(1000):
            layout = self._sample_layout(rng, task)
            if layout is not None:
                break
        else:  # pragma: no cover - the region is large enough that this never happens
            raise RuntimeError("could not sample a valid arm layout")
        d, m = self.data, self.model
        d.qpos[self._arm_qadr] = self.home_q
        d.qpos[self._finger_qadr] = GRIPPER_OPEN if task.family == "place" else GRIPPER_CLOSED
        d.ctrl[:6] = self.home_q
        d.ctrl[6:8] = d.qpos[self._finger_qadr]
        for colour in ARM_COLOURS:
            adr = self._cube_qadr[colour]
            x, y, yaw = layout[f"cube_{colour}"]
            d.qpos[adr: adr + 7] = [x, y, CUBE_HALF, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        m.body("post").pos[:2] = layout["post"]
        m.body("bowl").pos[:2] = layout["bowl"]
        return layout

    def _sample_layout(self, rng: np.random.Generator, task: Task) -> dict[str, np.ndarray] | None:
        (x0, x1), (y0, y1) = CUBE_REGION
        cubes = {c: np.array([rng.uniform(x0, x1), rng.uniform(y0, y1), rng.uniform(-np.pi / 4, np.pi / 4)]) for c in ARM_COLOURS}
        xy = {c: v[:2] for c, v in cubes.items()}
        if min(np.linalg.norm(xy[a] - xy[b]) for i, a in enumerate(ARM_COLOURS) for b in ARM_COLOURS[i + 1:]) < 0.075:
            return None
        bowl_side = 1.0 if rng.uniform() < 0.5 else -1.0
        bowl = np.array([rng.uniform(*BOWL_REGION[0]), bowl_side * rng.uniform(*BOWL_REGION[1])])
        target = xy[task.colour]
        to_cube = target - HOME_TCP[:2]
        dist = float(np.linalg.norm(to_cube))
        if dist < 0.27:
            return None
        post = HOME_TCP[:2] + to_cube / dist * rng.uniform(0.12, dist - 0.13) + rng.normal(0, 0.005, 2)
        if min(np.linalg.norm(post - p) for p in xy.values()) < 0.09 or np.linalg.norm(post - bowl) < 0.13:
            return None
        if task.family == "push":  # keep the push corridor free of the other cubes
            goal = TARGETS[task.goal]  # type: ignore[index]
            seg = goal - target
            for c, p in xy.items():
                if c == task.colour:
                    continue
                t = np.clip(np.dot(p - target, seg) / np.dot(seg, seg), 0.0, 1.0)
                if np.linalg.norm(target + t * seg - p) < 0.075:
                    return None
        layout = {f"cube_{c}": v for c, v in cubes.items()}
        layout.update(post=post, bowl=bowl)
        return layout

    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:6] = action[:6]
        self.data.ctrl[6:8] = action[6]

    def _before_substep(self) -> None:
        pass

    def _state(self) -> np.ndarray:
        return np.append(self.data.qpos[self._arm_qadr], self.data.qpos[self._finger_qadr[0]])

    def progress(self) -> float:
        task = self.task
        cube = self.cube_pos(task.colour)
        tcp = self.tcp_pose()[0]
        reach = 1.0 - min(float(np.linalg.norm(tcp - cube)) / 0.5, 1.0)
        if task.family == "touch":
            return reach
        if task.family == "push":
            goal = TARGETS[task.goal]  # type: ignore[index]
            start = self.layout[f"cube_{task.colour}"][:2]
            moved = 1.0 - min(float(np.linalg.norm(cube[:2] - goal)) / max(float(np.linalg.norm(start - goal)), 1e-3), 1.0)
            return 0.3 * reach + 0.7 * moved
        bowl = self.model.body("bowl").pos[:2]
        start = self.layout[f"cube_{task.colour}"][:2]
        moved = 1.0 - min(float(np.linalg.norm(cube[:2] - bowl)) / max(float(np.linalg.norm(start - bowl)), 1e-3), 1.0)
        lifted = min(max(float(cube[2]) - CUBE_HALF, 0.0) / 0.05, 1.0)
        return 0.3 * reach + 0.2 * max(lifted, moved) + 0.5 * moved

    def _evaluate(self, pairs: list[tuple[int, int]]) -> tuple[bool, str | None]:
        task = self.task
        if touching(pairs, self._robot_geoms, self._post_geoms):
            return False, "hit_obstacle"
        if touching(pairs, self._arm_geoms, self._floor_geoms):
            return False, "arm_hit_table"
        for colour in ARM_COLOURS:
            p = self.cube_pos(colour)
            if not (0.05 < p[0] < 0.8 and abs(p[1]) < 0.5 and p[2] > -0.01):
                return False, "cube_lost"
        cube = self.cube_pos(task.colour)
        target_geoms = self._cube_geoms[task.colour]
        if task.family == "touch":
            others = set().union(*(self._cube_geoms[c] for c in ARM_COLOURS if c != task.colour))
            if touching(pairs, self._gripper_geoms, others):
                return False, "touched_wrong_cube"
            return touching(pairs, self._gripper_geoms, target_geoms), None
        if task.family == "push":
            goal = TARGETS[task.goal]  # type: ignore[index]
            return bool(np.linalg.norm(cube[:2] - goal) < PUSH_TOLERANCE and cube[2] < CUBE_HALF + 0.005), None
        bowl = self.model.body("bowl").pos
        inside = bool(np.all(np.abs(cube[:2] - bowl[:2]) < BOWL_INNER_HALF) and cube[2] < BOWL_HEIGHT + CUBE_HALF)
        released = not touching(pairs, self._gripper_geoms, target_geoms)
        return inside and released and self.data.qpos[self._finger_qadr[0]] > 0.03, None
