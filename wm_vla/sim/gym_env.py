"""Our sim worlds as Gymnasium environments with LeRobot observation keys (`pixels/<camera>`, `agent_pos`).

Registered ids: "wm_vla/Arm-v0" and "wm_vla/Quadruped-v0". `reset(options={"task": "..."})` sets the instruction.
reward = 1 on success; terminated on success or failure; truncated on the time limit; info["is_success"].
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wm_vla.sim.registry import make_world
from wm_vla.sim.world import Observation


class SimGymEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, world: str = "arm", image_size: int = 96) -> None:
        self.world = make_world(world, image_size=image_size)
        img = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = spaces.Dict({
            **{f"pixels/{cam}": img for cam in self.world.camera_names},
            "agent_pos": spaces.Box(-np.inf, np.inf, (len(self.world.state_names),), np.float32),
        })
        self.action_space = spaces.Box(self.world.action_low.astype(np.float32), self.world.action_high.astype(np.float32))

    def _obs(self, obs: Observation) -> dict[str, np.ndarray]:
        return {**{f"pixels/{c}": img for c, img in obs.images.items()}, "agent_pos": obs.state}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        super().reset(seed=seed)
        seed = int(self.np_random.integers(2**31)) if seed is None else seed
        obs = self.world.reset(seed, task=(options or {}).get("task"))
        return self._obs(obs), {"task": obs.instruction}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        result = self.world.step(action)
        truncated = result.event == "timeout"
        info = {"is_success": result.success, "event": result.event, "task": result.observation.instruction}
        return self._obs(result.observation), float(result.success), result.done and not truncated, truncated, info

    def render(self) -> np.ndarray:
        return self.world.render(self.world.camera_names[0])

    def close(self) -> None:
        self.world.close()


for _name, _world in (("Arm", "arm"), ("Quadruped", "quadruped")):
    if f"wm_vla/{_name}-v0" not in gym.registry:
        gym.register(f"wm_vla/{_name}-v0", entry_point=SimGymEnv, kwargs={"world": _world})
