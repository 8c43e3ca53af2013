"""Name -> world and expert factories."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from wm_vla.sim.errors import UnknownWorldError
from wm_vla.sim.world import Observation, SimWorld, WorldConfig

WORLD_NAMES = ("arm", "quadruped")
DEFAULT_TIME_LIMIT_S = {"arm": 15.0, "quadruped": 20.0}


class Expert(Protocol):
    """A scripted controller: one action per observation; `mode` names its random choice (e.g. detour side)."""

    @property
    def mode(self) -> str: ...

    def act(self, obs: Observation) -> np.ndarray: ...


def _check(name: str) -> None:
    if name not in WORLD_NAMES:
        raise UnknownWorldError(f"unknown world {name!r}; available worlds: {', '.join(WORLD_NAMES)}")


def make_world(name: str, *, image_size: int = 96, render: bool = True, time_limit_s: float | None = None) -> SimWorld:
    """Build a world by name ("arm" or "quadruped")."""
    _check(name)
    config = WorldConfig(image_size=image_size, render=render, time_limit_s=time_limit_s or DEFAULT_TIME_LIMIT_S[name])
    if name == "arm":
        from wm_vla.sim.arm_world import ArmTabletopWorld

        return ArmTabletopWorld(config)
    from wm_vla.sim.quadruped_world import QuadrupedNavWorld

    return QuadrupedNavWorld(config)


def make_expert(world: SimWorld, rng: np.random.Generator, noise: float = 0.0) -> Expert:
    """The scripted expert of `world` for its current episode (call after reset)."""
    _check(world.name)
    if world.name == "arm":
        from wm_vla.sim.arm_expert import ArmExpert

        return ArmExpert(world, rng, noise)  # type: ignore[arg-type]
    from wm_vla.sim.quadruped_expert import QuadrupedExpert

    return QuadrupedExpert(world, rng, noise)  # type: ignore[arg-type]
