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
