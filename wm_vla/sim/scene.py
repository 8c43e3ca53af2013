"""Shared MuJoCo helpers: robot specs from our URDFs, cameras, actuators, rendering."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


import mujoco

from wm_vla.sim.errors import RenderError

REPO_ROOT = Path(__file__).resolve().parents[2]
URDF_DIR = REPO_ROOT / "urdf"

# A ROS optical frame (z forward, x right, y down) -> MuJoCo camera frame (looks along -z, y up).
OPTICAL_TO_MUJOCO_CAMERA_QUAT = (0.0, 1.0, 0.0, 0.0)


def urdf_path(name: str) -> Path:
    """Path of a URDF shipped in `urdf/`."""
    path = URDF_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"URDF {path} not found (is the repository complete?)")
    return path


def load_robot_spec(urdf: Path, rgba: tuple[float, float, float, float] | None = None) -> mujoco.MjSpec:
    """Load a URDF as an MjSpec; geoms get `rgba` (URDF collision geoms carry no colour)."""
    spec = mujoco.MjSpec.from_file(str(urdf))
    spec.compiler.discardvisual = False  # keep our contact-free scene geoms (markers, targets)
    for geom in spec.geoms:
        geom.rgba = rgba or (0.62, 0.62, 0.65, 1.0)
    return spec


def look_at_quat(pos: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """Quaternion (w, x, y, z) of a MuJoCo camera at `pos` looking at `target`."""
    z_cam = np.asarray(pos, float) - np.asarray(target, float)
    z_cam /= np.linalg.norm(z_cam)
    x_cam = np.cross(up, z_cam)
    x_cam /= np.linalg.norm(x_cam)
    y_cam = np.cross(z_cam, x_cam)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([x_cam, y_cam, z_cam]).flatten())
    return quat


def add_position_actuator(spec: mujoco.MjSpec, joint: str, kp: float, kv: float, ctrlrange: tuple[float, float]) -> None:
    act = spec.add_actuator(name=f"{joint}_pos", target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_position(kp=kp, kv=kv)
    act.ctrlrange = ctrlrange
    act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE


def add_velocity_actuator(spec: mujoco.MjSpec, joint: str, kv: float) -> None:
    act = spec.add_actuator(name=f"{joint}_vel", target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_velocity(kv=kv)


def add_default_lights_and_floor(spec: mujoco.MjSpec, floor_rgb: tuple[float, float, float], size: float) -> None:
    tex = spec.add_texture(name="floor_tex", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                           rgb1=floor_rgb, rgb2=tuple(0.85 * c for c in floor_rgb), width=256, height=256)
    del tex
    mat = spec.add_material(name="floor_mat", texrepeat=(size * 2, size * 2))
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "floor_tex"
    spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=(size, size, 0.05), material="floor_mat")
    spec.worldbody.add_light(pos=(0.3, 0.0, 2.5), dir=(0.0, 0.0, -1.0), diffuse=(0.7, 0.7, 0.7), castshadow=False)
    spec.worldbody.add_light(pos=(1.5, 1.5, 2.0), dir=(-0.5, -0.5, -1.0), diffuse=(0.3, 0.3, 0.3), castshadow=False)
    spec.visual.headlight.ambient = (0.35, 0.35, 0.35)
    spec.visual.quality.shadowsize = 0


class CameraRenderer:
    """Renders named cameras of one model to uint8 RGB arrays, shadows and reflections off."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int) -> None:
        try:
            self._renderer = mujoco.Renderer(model, height, width)
        except Exception as exc:  # GL context creation errors come in several types
            from wm_vla.sim import MUJOCO_GL_PICKED_TOO_EARLY

            if MUJOCO_GL_PICKED_TOO_EARLY:
                raise RenderError("mujoco was imported before wm_vla.sim with MUJOCO_GL unset, so it chose GLFW "
                                  "(needs a display); set MUJOCO_GL=egl (or osmesa) in the environment, or import "
                                  "wm_vla.sim first") from exc
            raise RenderError(
                f"cannot create an offscreen GL context with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} ({exc}). "
                "Install EGL (apt: libegl1 libegl-mesa0 libgl1-mesa-dri) or OSMesa (libosmesa6) and set MUJOCO_GL "
                "to 'egl' or 'osmesa' before starting Python; `make setup` installs both."
            ) from exc
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        self._renderer.update_scene(data, camera=camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()


def body_geoms(model: mujoco.MjModel, body_names: list[str]) -> set[int]:
    """Ids of all geoms attached to the named bodies."""
    ids = {model.body(name).id for name in body_names}
    return {g for g in range(model.ngeom) if int(model.geom_bodyid[g]) in ids}


def contact_pairs(data: mujoco.MjData) -> list[tuple[int, int]]:
    """Geom id pairs of the active contacts."""
    return [(int(c.geom1), int(c.geom2)) for c in data.contact[: data.ncon]]


def touching(pairs: list[tuple[int, int]], group_a: set[int], group_b: set[int]) -> bool:
    """Whether any contact joins a geom of `group_a` to one of `group_b`."""
    return any((a in group_a and b in group_b) or (b in group_a and a in group_b) for a, b in pairs)
