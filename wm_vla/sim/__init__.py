"""MuJoCo sim worlds built from our URDFs, with multimodal scripted experts.

Importing this package selects headless EGL rendering unless MUJOCO_GL is already set
(MuJoCo reads it once, at its own import).
"""

from __future__ import annotations

import os
import sys

# True when mujoco was imported before us with MUJOCO_GL unset: it then chose GLFW, which needs a display.
MUJOCO_GL_PICKED_TOO_EARLY = "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ
os.environ.setdefault("MUJOCO_GL", "egl")

from wm_vla.sim.errors import ActionError, RenderError, SimError, UnknownTaskError, UnknownWorldError  # noqa: E402
from wm_vla.sim.registry import WORLD_NAMES, make_expert, make_world  # noqa: E402
from wm_vla.sim.tasks import Task, parse_instruction, sample_task  # noqa: E402
from wm_vla.sim.world import Observation, SimWorld, StepResult, WorldConfig  # noqa: E402

__all__ = [
    "ActionError", "Observation", "RenderError", "SimError", "SimWorld", "StepResult", "Task", "UnknownTaskError",
    "UnknownWorldError", "WORLD_NAMES", "WorldConfig", "make_expert", "make_world", "parse_instruction", "sample_task",
]
