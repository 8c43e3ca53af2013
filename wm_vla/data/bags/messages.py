"""Build rosbags message objects (typestore classes) from numpy values: what the recorder and test bags write."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wm_vla.data.bags.images import rgb_to_image_fields
from wm_vla.data.bags.typestore import bag_typestore

NS = 1_000_000_000


def _t(name: str) -> Any:
    return bag_typestore().types[name]


def stamp(ns: int) -> Any:
    return _t("builtin_interfaces/msg/Time")(sec=int(ns // NS), nanosec=int(ns % NS))


def duration(ns: int) -> Any:
    return _t("builtin_interfaces/msg/Duration")(sec=int(ns // NS), nanosec=int(ns % NS))


def header(ns: int, frame_id: str = "") -> Any:
    return _t("std_msgs/msg/Header")(stamp=stamp(ns), frame_id=frame_id)


def image(rgb: np.ndarray, ns: int, frame_id: str = "", encoding: str = "bgr8") -> Any:
    return _t("sensor_msgs/msg/Image")(header=header(ns, frame_id), **rgb_to_image_fields(rgb, encoding))


def joint_state(names: Sequence[str], position: np.ndarray, ns: int, velocity: np.ndarray | None = None) -> Any:
    n = len(names)
    return _t("sensor_msgs/msg/JointState")(
        header=header(ns), name=list(names), position=np.asarray(position, np.float64),
        velocity=np.asarray(velocity if velocity is not None else np.zeros(n), np.float64), effort=np.zeros(0))


def joint_trajectory(names: Sequence[str], positions: np.ndarray, period_ns: int, ns: int = 0) -> Any:
    """A JTC trajectory: point i reaches positions[i] at (i + 1) periods (header stamp 0 = start now)."""
    pt = _t("trajectory_msgs/msg/JointTrajectoryPoint")
    pos = np.atleast_2d(np.asarray(positions, np.float64))
    vel = np.gradient(pos, period_ns / NS, axis=0) if len(pos) > 1 else np.zeros_like(pos)
    points = [pt(positions=p, velocities=v, accelerations=np.zeros(0), effort=np.zeros(0),
                 time_from_start=duration((i + 1) * period_ns)) for i, (p, v) in enumerate(zip(pos, vel))]
    return _t("trajectory_msgs/msg/JointTrajectory")(header=header(ns), joint_names=list(names), points=points)


def float64_array(values: np.ndarray) -> Any:
    layout = _t("std_msgs/msg/MultiArrayLayout")(dim=[], data_offset=0)
    return _t("std_msgs/msg/Float64MultiArray")(layout=layout, data=np.asarray(values, np.float64))


def string(text: str) -> Any:
    return _t("std_msgs/msg/String")(data=text)


def observation(images: dict[str, np.ndarray], state: np.ndarray, state_names: Sequence[str], ns: int,
                frame_id: str = "base_link") -> Any:
    """wm_vla_interfaces/Observation: rgb8 images (in dict order) + joint state + state vector, all stamped `ns`."""
    return _t("wm_vla_interfaces/msg/Observation")(
        header=header(ns, frame_id), images=[image(img, ns, f"{name}_camera", "rgb8") for name, img in images.items()],
        camera_names=list(images), joint_state=joint_state(state_names, state, ns), state=np.asarray(state, np.float64))


def action_candidates(actions: np.ndarray, obs_latent: np.ndarray, future_latents: np.ndarray,
                      action_names: Sequence[str], seed: int, instruction: str, ns: int, policy_id: str = "",
                      wm_latent: np.ndarray | None = None) -> Any:
    k, h, a = actions.shape
    m = future_latents.shape[-2] if future_latents.ndim >= 2 else 0
    return _t("wm_vla_interfaces/msg/ActionCandidates")(
        header=header(ns), k=k, h=h, a=a, action_names=list(action_names),
        actions=np.ascontiguousarray(actions, np.float32).reshape(-1),
        obs_latent=np.asarray(obs_latent, np.float32).reshape(-1),
        wm_latent=np.asarray(wm_latent if wm_latent is not None else (), np.float32).reshape(-1), m=m,
        latent_dim=int(np.size(obs_latent)),
        future_latents=np.ascontiguousarray(future_latents, np.float32).reshape(-1),
        policy_scores=np.zeros(0, np.float32), seed=int(seed), instruction=instruction, policy_id=policy_id)


def ranking_result(chosen: int, scores: np.ndarray, progress: np.ndarray, failure_prob: np.ndarray,
                   stage_ms: dict[str, float], ns: int, backend: str = "torch", ranker: str = "gpc_rank",
                   degraded: bool = False) -> Any:
    return _t("wm_vla_interfaces/msg/RankingResult")(
        header=header(ns), chosen=int(chosen), scores=np.asarray(scores, np.float32),
        progress=np.asarray(progress, np.float32), failure_prob=np.asarray(failure_prob, np.float32),
        stage_names=list(stage_ms), stage_ms=np.asarray(list(stage_ms.values()), np.float32), backend=backend,
        ranker=ranker, degraded=bool(degraded))
