"""Run scripted-expert episodes and turn them into dataset frames."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wm_vla.sim.registry import make_expert
from wm_vla.sim.tasks import sibling_tasks
from wm_vla.sim.world import Observation, SimWorld


@dataclass
class EpisodeRecord:
    """One finished episode: its frames (obs + action + labels) and outcome."""

    seed: int
    instruction: str
    mode: str
    success: bool
    event: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    relabel_instructions: tuple[str, ...] = ()  # with hindsight: the instructions of the frames' relabel columns

    def summary(self) -> dict[str, Any]:
        return {"seed": self.seed, "instruction": self.instruction, "mode": self.mode, "success": self.success,
                "event": self.event, "frames": len(self.frames)}


def episode_frame(obs: Observation, action: np.ndarray, success: bool, failure: bool, done: bool) -> dict[str, Any]:
    frame: dict[str, Any] = {f"observation.images.{cam}": img for cam, img in obs.images.items()}
    frame.update({
        "observation.state": obs.state.astype(np.float32),
        "action": np.asarray(action, dtype=np.float32),
        "next.success": np.array([success]),
        "next.failure": np.array([failure]),
        "next.done": np.array([done]),
        "task": obs.instruction,
    })
    return frame


def run_expert_episode(world: SimWorld, seed: int, noise: float = 0.0, family: str | None = None,
                       task: str | None = None, keep_frames: bool = True,
                       on_step: Callable[[Observation], None] | None = None,
                       hindsight: bool = False) -> EpisodeRecord:
    """Reset `world` with `seed`, let its expert act until the episode ends; the expert's choices are seeded too.

    With `hindsight`, every frame also gets `hindsight.success` / `hindsight.failure`: the same step judged as if
    each of the scene's other instructions (`relabel_instructions`, in that order) had been asked.
    """
    obs = world.reset(seed, task=task, family=family)
    expert = make_expert(world, np.random.default_rng([int(seed), 1]), noise)
    relabel = sibling_tasks(world.name, world.task) if hindsight else ()
    frames: list[dict[str, Any]] = []
    while True:
        action = expert.act(obs)
        result = world.step(action)
        if keep_frames:
            frames.append(episode_frame(obs, world.check_action(action), result.success, result.failure, result.done))
            if relabel:
                judged = [world.judge_as(t) for t in relabel]
                frames[-1]["hindsight.success"] = np.array([j[0] for j in judged])
                frames[-1]["hindsight.failure"] = np.array([j[1] for j in judged])
        if on_step is not None:
            on_step(obs)
        obs = result.observation
        if result.done:
            break
    for frame in frames:
        frame["episode_success"] = np.array([result.success])
    return EpisodeRecord(int(seed), world.task.instruction, expert.mode, result.success, result.event or "", frames,
                         tuple(t.instruction for t in relabel))
