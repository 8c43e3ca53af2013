"""Scripted, multimodal expert for quadruped navigation: detour left or right of the blocking box."""

from __future__ import annotations

import numpy as np

from wm_vla.sim.quadruped_world import DETOUR_CLEARANCE, VEL_LIMITS, QuadrupedNavWorld, detour_waypoints
from wm_vla.sim.world import Observation


class QuadrupedExpert:
    """Heading controller over two waypoints: a detour point beside the blocking box, then the marker."""

    def __init__(self, world: QuadrupedNavWorld, rng: np.random.Generator, noise: float = 0.0) -> None:
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        self.world, self.rng, self.noise = world, rng, noise
        self.side = 1.0 if rng.uniform() < 0.5 else -1.0
        layout = world.layout
        offset = DETOUR_CLEARANCE * self.side
        if rng.uniform() < 0.5 * noise:  # blurred modes: straight into the box
            offset *= rng.uniform(0.0, 0.4)
        self.waypoints = detour_waypoints(layout[f"marker_{world.task.colour}"], layout["obstacle0"], offset)
        self.index = 0

    @property
    def mode(self) -> str:
        return "left" if self.side > 0 else "right"

    def act(self, obs: Observation) -> np.ndarray:
        """Body velocity (vx, vy, wz) for the next control period."""
        del obs  # privileged expert
        x, y, yaw = self.world.base_pose()
        pos = np.array([x, y])
        if self.index < len(self.waypoints) - 1 and np.linalg.norm(self.waypoints[self.index] - pos) < 0.2:
            self.index += 1
        delta = self.waypoints[self.index] - pos
        heading_err = (np.arctan2(delta[1], delta[0]) - yaw + np.pi) % (2 * np.pi) - np.pi
        wz = 2.5 * heading_err
        vx = VEL_LIMITS[0] * max(0.0, np.cos(heading_err)) ** 3
        c, s = np.cos(yaw), np.sin(yaw)
        vy = 1.5 * (-s * delta[0] + c * delta[1]) if abs(heading_err) < 0.5 else 0.0
        cmd = np.array([vx, vy, wz]) + self.rng.normal(0.0, 0.3 * self.noise, 3) * VEL_LIMITS
        return np.clip(cmd, -VEL_LIMITS, VEL_LIMITS)
