"""The contract every sim world follows: seeded reset, fixed-rate step, observations, success checks."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import mujoco
import numpy as np

from wm_vla.robots import RobotProfile, load_profile
from wm_vla.sim.errors import ActionError
from wm_vla.sim.scene import CameraRenderer, contact_pairs
from wm_vla.sim.tasks import Task, parse_instruction, sample_task


@dataclass
class Observation:
    """What a robot would sense: camera images (H×W×3 uint8), proprio state and the instruction."""

    images: dict[str, np.ndarray]
    state: np.ndarray
    instruction: str
    time_s: float


@dataclass
class StepResult:
    """Outcome of one control step. `event` names why the episode ended, if it did."""

    observation: Observation
    success: bool
    failure: bool
    done: bool
    event: str | None = None


@dataclass
class WorldConfig:
    """Settings shared by all worlds."""

    image_size: int = 96
    fps: int = 10
    physics_dt: float = 0.002
    time_limit_s: float = 15.0
    render: bool = True


@dataclass
class EpisodeState:
    """Book-keeping of the running episode."""

    seed: int = -1
    task: Task | None = None
    steps: int = 0
    done: bool = True
    layout: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SimState:
    """A full snapshot (physics integration state + episode book-keeping) for exact restore."""

    physics: np.ndarray
    episode: EpisodeState


_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION


class SimWorld(ABC):
    """Base class of MuJoCo worlds commanded at `fps` with a fixed action vector."""

    name: str = ""
    profile_name: str = ""
    camera_names: tuple[str, ...] = ()

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self.profile: RobotProfile = load_profile(self.profile_name)
        self.action_names: tuple[str, ...] = tuple(self.profile.action.names)
        self.state_names: tuple[str, ...] = tuple(self.profile.state.names)
        if self.config.fps <= 0 or self.config.physics_dt <= 0:
            raise ValueError("fps and physics_dt must be positive")
        self.model = self._build_spec().compile()
        self.model.opt.timestep = self.config.physics_dt
        self.data = mujoco.MjData(self.model)
        self.substeps = max(1, round(1.0 / (self.config.fps * self.config.physics_dt)))
        self.episode = EpisodeState()
        self._last_pairs: list[tuple[int, int]] = []
        self._renderer: CameraRenderer | None = None
        self.action_low = np.array(self.profile.action.low, dtype=float)
        self.action_high = np.array(self.profile.action.high, dtype=float)

    # ----- to implement per world -----
    @abstractmethod
    def _build_spec(self) -> mujoco.MjSpec: ...

    @abstractmethod
    def _place(self, rng: np.random.Generator, task: Task) -> dict[str, np.ndarray]:
        """Lay out the scene for `task` into self.data; return the layout (for experts and checks)."""

    @abstractmethod
    def _apply_action(self, action: np.ndarray) -> None: ...

    @abstractmethod
    def _before_substep(self) -> None: ...

    @abstractmethod
    def _state(self) -> np.ndarray: ...

    @abstractmethod
    def _evaluate(self, pairs: list[tuple[int, int]]) -> tuple[bool, str | None]:
        """(success, failure event or None) after a control step."""

    @abstractmethod
    def progress(self) -> float:
        """Privileged task progress in [0, 1] from the true sim state (oracle ranking only; robots don't have it)."""

    # ----- shared behaviour -----
    @property
    def fps(self) -> int:
        return self.config.fps

    @property
    def max_steps(self) -> int:
        return int(round(self.config.time_limit_s * self.config.fps))

    @property
    def task(self) -> Task:
        if self.episode.task is None:
            raise RuntimeError("call reset() first")
        return self.episode.task

    @property
    def layout(self) -> dict[str, np.ndarray]:
        return self.episode.layout

    def reset(self, seed: int, task: Task | str | None = None, family: str | tuple[str, ...] | None = None) -> Observation:
        """Deterministic reset: the same seed (and task) gives the same scene, bit for bit."""
        rng = np.random.default_rng([int(seed), 0x5EED])
        if isinstance(task, str):
            task = parse_instruction(self.name, task)
        task = task or sample_task(self.name, rng, family)
        mujoco.mj_resetData(self.model, self.data)
        self.episode = EpisodeState(seed=int(seed), task=task, steps=0, done=False)
        self._last_pairs = []
        self.episode.layout = self._place(rng, task)
        mujoco.mj_forward(self.model, self.data)
        return self.observe()

    def check_action(self, action: np.ndarray) -> np.ndarray:
        arr = np.asarray(action, dtype=np.float64).reshape(-1)
        if arr.shape != (len(self.action_names),):
            raise ActionError(f"{self.name} world expects an action of length {len(self.action_names)} "
                              f"({', '.join(self.action_names)}), got shape {np.shape(action)}")
        if not np.all(np.isfinite(arr)):
            raise ActionError(f"{self.name} world got a non-finite action {arr.tolist()}")
        return np.clip(arr, self.action_low, self.action_high)

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action for 1/fps seconds of physics and evaluate the task."""
        if self.episode.done:
            raise RuntimeError("episode is over; call reset()")
        self._apply_action(self.check_action(action))
        pairs: set[tuple[int, int]] = set()
        for _ in range(self.substeps):
            self._before_substep()
            mujoco.mj_step(self.model, self.data)
            pairs.update(contact_pairs(self.data))
        self.episode.steps += 1
        self._last_pairs = sorted(pairs)
        success, failure, event = self._judge_last_step()
        self.episode.done = success or failure
        return StepResult(self.observe(), success, failure, self.episode.done, "success" if success else event)

    def _judge_last_step(self) -> tuple[bool, bool, str | None]:
        success, event = self._evaluate(self._last_pairs)
        success = bool(success)
        if not success and event is None and self.episode.steps >= self.max_steps:
            event = "timeout"
        return success, event is not None and not success, event

    def judge_as(self, task: Task) -> tuple[bool, bool, float]:
        """(success, failure, progress) of the last step as if `task` had been the episode's task.

        Hindsight relabelling: one rollout labels the same actions for every instruction the scene affords.
        """
        if self.episode.task is None:
            raise RuntimeError("call reset() first")
        actual = self.episode.task
        self.episode.task = task
        try:
            success, failure, _event = self._judge_last_step()
            return success, failure, self.progress()
        finally:
            self.episode.task = actual

    def get_state(self) -> SimState:
        physics = np.empty(mujoco.mj_stateSize(self.model, _STATE_SPEC))
        mujoco.mj_getState(self.model, self.data, physics, _STATE_SPEC)
        return SimState(physics, copy.deepcopy(self.episode))

    def set_state(self, state: SimState) -> None:
        mujoco.mj_setState(self.model, self.data, state.physics, _STATE_SPEC)
        self.episode = copy.deepcopy(state.episode)
        self._last_pairs = []
        mujoco.mj_forward(self.model, self.data)

    @contextmanager
    def rendering(self, enabled: bool) -> Iterator[None]:
        """Temporarily switch camera rendering on or off (off makes what-if rollouts fast)."""
        saved = self.config.render
        self.config.render = enabled
        try:
            yield
        finally:
            self.config.render = saved

    def joint_positions(self) -> dict[str, float]:
        """Positions of the profile's robot joints that the sim models (what a joint_states driver publishes)."""
        p = self.profile
        names = (*p.arm_joints, *p.gripper_joints, *p.leg_joints)
        out = {}
        for name in names:
            try:
                out[name] = float(self.data.qpos[self.model.joint(name).qposadr[0]])
            except KeyError:
                continue
        return out

    def observe(self) -> Observation:
        images = {cam: self.render(cam) for cam in self.camera_names} if self.config.render else {}
        return Observation(images, self._state().astype(np.float32), self.task.instruction, float(self.data.time))

    def render(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            self._renderer = CameraRenderer(self.model, self.config.image_size, self.config.image_size)
        return self._renderer.render(self.data, camera)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
