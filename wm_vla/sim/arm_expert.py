"""Scripted, deliberately multimodal expert for the arm tabletop.

Every episode starts by detouring around the obstacle post on a randomly chosen side; grasps pick one of
two face-aligned yaws. Averaging the two modes drives through the post, so a policy that blurs modes fails.
`noise` in [0, 1] perturbs the expert (joint noise, blurred detours, sloppy grasps) to produce failures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wm_vla.sim.arm_world import (
    CUBE_HALF,
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    HOME_TCP,
    TARGETS,
    ArmTabletopWorld,
    down_rotation,
    wrap_half_pi,
)
from wm_vla.sim.world import Observation

TRANSIT_Z = 0.08
CARRY_Z = 0.18
DETOUR_SIDE_OFFSET = 0.11
DETOUR_ALONG_OFFSET = 0.07


@dataclass
class Waypoint:
    """A TCP goal: position, gripper yaw, gripper opening, speed, tolerance and a dwell after arrival."""

    pos: np.ndarray
    yaw: float
    gripper: float
    speed: float = 0.25
    tol: float = 0.012
    dwell: int = 0


class ArmExpert:
    """Closed-loop waypoint follower: Cartesian step toward the next waypoint, then damped-LS IK."""

    def __init__(self, world: ArmTabletopWorld, rng: np.random.Generator, noise: float = 0.0) -> None:
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        self.world, self.rng, self.noise = world, rng, noise
        self.side = 1.0 if rng.uniform() < 0.5 else -1.0
        self.waypoints = self._plan()
        self.index = 0
        self.dwell_left = 0
        self.retries = 0

    @property
    def mode(self) -> str:
        return "left" if self.side > 0 else "right"

    def _plan(self) -> list[Waypoint]:
        w, task, rng, noise = self.world, self.world.task, self.rng, self.noise
        layout = w.layout
        cube_x, cube_y, cube_yaw = layout[f"cube_{task.colour}"]
        cube = np.array([cube_x, cube_y])
        post = layout["post"]
        u = (cube - HOME_TCP[:2]) / np.linalg.norm(cube - HOME_TCP[:2])
        n = np.array([-u[1], u[0]])
        side_offset = DETOUR_SIDE_OFFSET * self.side
        if rng.uniform() < 0.5 * noise:  # blurred modes: the mean of both detours runs into the post
            side_offset *= rng.uniform(0.0, 0.4)
        transit_yaw = wrap_half_pi(np.arctan2(-u[0], u[1]))  # long side of the gripper along the path
        travel_grip = GRIPPER_OPEN if task.family == "place" else GRIPPER_CLOSED
        wps = [
            Waypoint(np.r_[post - DETOUR_ALONG_OFFSET * u + side_offset * n, TRANSIT_Z], transit_yaw, travel_grip, tol=0.02),
            Waypoint(np.r_[post + DETOUR_ALONG_OFFSET * u + side_offset * n, TRANSIT_Z], transit_yaw, travel_grip, tol=0.02),
        ]
        grasp_yaw = wrap_half_pi(cube_yaw + (np.pi / 2 if rng.uniform() < 0.5 else 0.0))
        grasp_yaw += rng.uniform(-0.6, 0.6) * noise
        if task.family == "touch":
            wps += [Waypoint(np.r_[cube, TRANSIT_Z], grasp_yaw, GRIPPER_CLOSED),
                    Waypoint(np.r_[cube, 2 * CUBE_HALF - 0.006], grasp_yaw, GRIPPER_CLOSED, speed=0.08, tol=0.004)]
        elif task.family == "push":
            wps += self._push_waypoints(cube)
        else:  # place
            bowl = layout["bowl"]
            grasp_z = CUBE_HALF + 0.002 + rng.uniform(-0.015, 0.015) * noise
            wps += [Waypoint(np.r_[cube, TRANSIT_Z], grasp_yaw, GRIPPER_OPEN),
                    Waypoint(np.r_[cube, grasp_z], grasp_yaw, GRIPPER_OPEN, speed=0.1, tol=0.005),
                    Waypoint(np.r_[cube, grasp_z], grasp_yaw, GRIPPER_CLOSED, dwell=6),
                    Waypoint(np.r_[cube, CARRY_Z], grasp_yaw, GRIPPER_CLOSED, speed=0.15, tol=0.02),
                    Waypoint(np.r_[bowl, CARRY_Z], grasp_yaw, GRIPPER_CLOSED, tol=0.015),
                    Waypoint(np.r_[bowl, 0.09], grasp_yaw, GRIPPER_CLOSED, speed=0.12, tol=0.01),
                    Waypoint(np.r_[bowl, 0.09], grasp_yaw, GRIPPER_OPEN, dwell=4),
                    Waypoint(np.r_[bowl, CARRY_Z], grasp_yaw, GRIPPER_OPEN)]
        return wps

    def _push_waypoints(self, cube: np.ndarray) -> list[Waypoint]:
        """Go behind the cube (seen from the goal), lower, push it onto the goal, lift."""
        goal = TARGETS[self.world.task.goal]  # type: ignore[index]
        direction = (goal - cube) / max(float(np.linalg.norm(goal - cube)), 1e-6)
        push_yaw = wrap_half_pi(np.arctan2(-direction[0], direction[1]))
        behind = cube - 0.042 * direction
        end = goal - 0.03 * direction
        return [Waypoint(np.r_[behind, TRANSIT_Z], push_yaw, GRIPPER_CLOSED),
                Waypoint(np.r_[behind, CUBE_HALF], push_yaw, GRIPPER_CLOSED, speed=0.1, tol=0.006),
                Waypoint(np.r_[end, CUBE_HALF], push_yaw, GRIPPER_CLOSED, speed=0.07, tol=0.006),
                Waypoint(np.r_[end, TRANSIT_Z], push_yaw, GRIPPER_CLOSED)]

    def _replan_if_stuck(self, tcp: np.ndarray) -> None:
        """A push that left the cube short of the goal is retried from where the cube is (at most twice)."""
        last = self.waypoints[-1]
        if (self.world.task.family == "push" and self.index == len(self.waypoints) - 1
                and np.linalg.norm(last.pos - tcp) < last.tol and self.retries < 2):
            self.retries += 1
            self.waypoints += self._push_waypoints(self.world.cube_pos(self.world.task.colour)[:2])

    def act(self, obs: Observation) -> np.ndarray:
        """Joint-position targets (6) + gripper opening for the next control period."""
        w = self.world
        del obs  # the expert is privileged: it reads the sim state directly
        tcp, _ = w.tcp_pose()
        self._replan_if_stuck(tcp)
        wp = self.waypoints[min(self.index, len(self.waypoints) - 1)]
        if self.index < len(self.waypoints) - 1 and np.linalg.norm(wp.pos - tcp) < wp.tol:
            if self.dwell_left == 0 and wp.dwell:
                self.dwell_left = wp.dwell
            if self.dwell_left > 0:
                self.dwell_left -= 1
            if self.dwell_left == 0:
                self.index += 1
                wp = self.waypoints[self.index]
        delta = wp.pos - tcp
        max_step = wp.speed / w.fps
        dist = float(np.linalg.norm(delta))
        goal = tcp + (delta if dist <= max_step else delta * (max_step / dist))
        q, _ = w.solve_ik(w.arm_q(), goal, down_rotation(wp.yaw))
        q = q + self.rng.normal(0.0, 0.05 * self.noise, q.shape)
        return np.append(q, wp.gripper)
