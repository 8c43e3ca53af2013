"""Message <-> numpy conversions and the QoS profiles of DESIGN.md §3 (sensor data best-effort, commands reliable)."""

from __future__ import annotations

import array
import sys
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from wm_vla.data.images import decode_compressed, decode_raw

SENSOR_QOS = qos_profile_sensor_data
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def to_s(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def from_ns(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def f32(values: np.ndarray) -> array.array:
    return array.array("f", np.ascontiguousarray(values, np.float32).tobytes())


def f64(values: np.ndarray) -> array.array:
    return array.array("d", np.ascontiguousarray(values, np.float64).tobytes())


def image_to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """Image (rgb8/bgr8/mono8/rgba8/bgra8) or CompressedImage -> RGB uint8; raises wm_vla FrameError."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(bytes(msg.data))
    return decode_raw(bytes(msg.data), msg.height, msg.width, msg.step, msg.encoding)


def rgb_to_image(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    h, w = rgb.shape[:2]
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = np.ascontiguousarray(rgb, np.uint8).tobytes()
    return msg


def depth_to_image(depth_m: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """float32 metres (NaN = no data) -> sensor_msgs/Image 32FC1 (REP 118)."""
    h, w = depth_m.shape
    msg = Image(height=h, width=w, encoding="32FC1", is_bigendian=int(sys.byteorder == "big"), step=w * 4)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = np.ascontiguousarray(depth_m, np.float32).tobytes()
    return msg


def odometry_values(msg: Any) -> dict[str, float]:
    """nav_msgs/Odometry -> {x, y, z, roll, pitch, yaw, vx, vy, vz, wx, wy, wz} (the profile's odometry names)."""
    from transforms3d.euler import quat2euler

    o, t = msg.pose.pose, msg.twist.twist
    roll, pitch, yaw = quat2euler([o.orientation.w, o.orientation.x, o.orientation.y, o.orientation.z])
    return {"x": o.position.x, "y": o.position.y, "z": o.position.z, "roll": roll, "pitch": pitch, "yaw": yaw,
            "vx": t.linear.x, "vy": t.linear.y, "vz": t.linear.z, "wx": t.angular.x, "wy": t.angular.y,
            "wz": t.angular.z}
