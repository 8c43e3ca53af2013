"""perception_node: camera frames + joint state -> wm_vla_interfaces/Observation stamped with the camera stamp.

Source `topic` (sensor_msgs/Image rgb8/bgr8/mono8/rgba8/bgra8, or CompressedImage when `compressed`), `opencv`
(V4L2 index or video path) or `realsense` (pyrealsense2; device timestamps in system time become the stamp). With
`depth` (realsense only) the depth stream is aligned to colour (rs.align), cropped like the colour image, resized
nearest-neighbour and published as sensor_msgs/Image 32FC1 metres (NaN = no data) on `depth_topic`, stamped like the
Observation it belongs to; a missing or wrong-size depth frame is dropped and counted (the colour still goes out). Frames of all cameras within `sync_slop_ms` of the
first camera's frame form a set; the robot state is taken as-of that stamp (newest sample not after it, at most
`max_state_age_ms` older). Frames older than `max_frame_age_ms` on arrival, frames whose stamp is not after the
camera's previous one (a clock jumping backwards), undecodable frames and NaN/short
joint states are dropped and counted per reason on /diagnostics, never forwarded.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from wm_vla_interfaces.msg import Observation

from node_common.diagnostics import Diagnostics
from node_common.msgs import (SENSOR_QOS, depth_to_image, f64, from_ns, image_to_rgb, odometry_values, rgb_to_image,
                              to_ns, to_s)
from node_common.spin import run
from perception_node.sources import RealSenseFrame
from wm_vla.data.errors import FrameError
from wm_vla.data.images import fit
from wm_vla.data.sync import AsOfBuffer
from wm_vla.robots import load_profile
from wm_vla.runtime.errors import SafetyError
from wm_vla.runtime.safety import check_joint_state

OBSERVATION_TOPIC = "/wm_vla/observation"
DEPTH_TOPIC = "/wm_vla/observation/depth"


class Perception(Node):
    def __init__(self, **kwargs: Any) -> None:
        """`kwargs` go to rclpy's Node (context, parameter_overrides)."""
        super().__init__("perception_node", **kwargs)
        decl = self.declare_parameters("", [
            ("robot", "arm"), ("source", "topic"), ("camera_names", [""]), ("camera_topics", [""]),
            ("compressed", False), ("image_size", 96), ("max_state_age_ms", 150.0), ("max_frame_age_ms", 0.0),
            ("sync_slop_ms", 20.0), ("device", "0"), ("fps", 30.0), ("output", OBSERVATION_TOPIC),
            ("depth", False), ("depth_topic", DEPTH_TOPIC)])
        p: dict[str, Any] = {d.name: d.value for d in decl}
        self.profile = load_profile(p["robot"])
        names = [n for n in p["camera_names"] if n] or [c.name for c in self.profile.cameras]
        topics = [t for t in p["camera_topics"] if t] or [c.topic for c in self.profile.cameras]
        if len(names) != len(topics):
            raise ValueError(f"camera_names {names} and camera_topics {topics} differ in length")
        self.cameras, self.size = names, int(p["image_size"])
        self.max_frame_age = (p["max_frame_age_ms"] or self.profile.max_obs_age_ms) / 1e3
        self.slop = p["sync_slop_ms"] / 1e3
        self.states: AsOfBuffer[tuple[np.ndarray, JointState | None]] = AsOfBuffer(p["max_state_age_ms"] / 1e3)
        self.frames: dict[str, tuple[float, Any, np.ndarray]] = {}   # camera -> (stamp s, stamp msg, resized rgb)
        self.last_stamp: dict[str, float] = {}  # camera -> newest accepted frame stamp (s)
        self.counts: Counter[str] = Counter()
        self.diag = Diagnostics(self, "perception")
        self.pub = self.create_publisher(Observation, p["output"], SENSOR_QOS)
        self._state_inputs()
        self.source = p["source"]
        if p["depth"] and self.source != "realsense":
            raise ValueError(f"depth needs the realsense source, got source {self.source!r}")
        self.depth: tuple[int, np.ndarray] | None = None  # (stamp ns, fitted metres) of the newest colour frame
        self.depth_pub = self.create_publisher(Image, p["depth_topic"], SENSOR_QOS) if p["depth"] else None
        if self.source == "topic":
            cls = CompressedImage if p["compressed"] else Image
            for name, topic in zip(names, topics):
                self.create_subscription(cls, topic, lambda m, n=name: self._on_frame(n, m), SENSOR_QOS)
        elif self.source in ("opencv", "realsense"):
            if len(names) != 1:
                raise ValueError(f"the {self.source} source gives one camera, got camera_names {names}")
            self.grabber = self._open_source(p)
            self.create_timer(1.0 / p["fps"], self._grab)
        else:
            raise ValueError(f"source must be topic, opencv or realsense, got {self.source!r}")
        self.create_timer(1.0, self._diagnostics)

    def _state_inputs(self) -> None:
        st = self.profile.state
        if st.kind == "joint_position":
            self.create_subscription(JointState, self.profile.topics.joint_states, self._on_joint_state, SENSOR_QOS)
        else:
            self.create_subscription(Odometry, self.profile.topics.odometry, self._on_odom, SENSOR_QOS)

    def _open_source(self, p: dict[str, Any]) -> Any:
        from perception_node.sources import OpenCvSource, RealSenseSource

        cam = next((c for c in self.profile.cameras), None)
        if self.source == "opencv":
            return OpenCvSource(str(p["device"]))
        return RealSenseSource.open(cam.width if cam else 640, cam.height if cam else 480, int(p["fps"]),
                                    depth=bool(p["depth"]))

    # ----- inputs -----
    def _drop(self, reason: str, message: str) -> None:
        self.counts[f"dropped_{reason}"] += 1
        self.diag.warn(f"dropped: {message}")

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            q = check_joint_state(msg.name, msg.position, self.profile.state.names)
        except SafetyError as exc:
            self._drop(exc.reason, f"joint state: {exc}")
            return
        self.states.add(to_s(msg.header.stamp), (q, msg))

    def _on_odom(self, msg: Odometry) -> None:
        values = odometry_values(msg)
        state = np.array([values[n] for n in self.profile.state.names])
        if not np.all(np.isfinite(state)):
            self._drop("non_finite", "odometry with non-finite values")
            return
        self.states.add(to_s(msg.header.stamp), (state, None))

    def _on_frame(self, camera: str, msg: Image | CompressedImage) -> None:
        stamp = to_s(msg.header.stamp)
        age = self.get_clock().now().nanoseconds * 1e-9 - stamp
        if age > self.max_frame_age:
            self._drop("stale_frame", f"{camera} frame {1e3 * age:.0f} ms old")
            return
        last = self.last_stamp.get(camera, -np.inf)
        if stamp <= last and stamp + age - last > -self.max_frame_age:  # (a previous stamp from the future: no block)
            self._drop("stamp_backwards", f"{camera} frame stamp {stamp:.3f} s is not after the previous "
                       f"{last:.3f} s ({1e3 * (last - stamp):.0f} ms back)")
            return
        try:
            rgb = fit(image_to_rgb(msg), self.size)
        except FrameError as exc:
            self._drop(exc.reason, f"{camera} frame: {exc}")
            return
        self.frames[camera] = (stamp, msg.header.stamp, rgb)
        self.last_stamp[camera] = stamp
        self._emit()

    def _grab(self) -> None:
        got = self.grabber.grab()
        if got is None:
            return
        now = self.get_clock().now()
        stamp_ns = now.nanoseconds
        if isinstance(got, RealSenseFrame):  # device time in the global (system) time domain
            rgb = got.rgb
            if got.global_time and abs(got.stamp_s - now.nanoseconds * 1e-9) < 1.0:  # and on our clock
                stamp_ns = round(got.stamp_s * 1e9)
            if got.depth_error is not None:
                self._drop(got.depth_error.reason, f"depth: {got.depth_error}")
            self.depth = None if got.depth_m is None else (stamp_ns, fit(got.depth_m, self.size, nearest=True))
        else:
            rgb = got
        self.frames[self.cameras[0]] = (stamp_ns * 1e-9, from_ns(stamp_ns), fit(rgb, self.size))
        self._emit()

    # ----- output -----
    def _emit(self) -> None:
        if len(self.frames) < len(self.cameras):
            return
        ref_s, ref_msg, _ = self.frames[self.cameras[0]]
        if any(abs(self.frames[c][0] - ref_s) > self.slop for c in self.cameras):
            return  # wait for the matching frames
        try:
            sample = self.states.as_of(ref_s)
        except FrameError as exc:
            self._drop(exc.reason, f"frame set at {ref_s:.3f} s: {exc}")
            self.frames.clear()
            return
        state, js = sample.value
        obs = Observation(camera_names=list(self.cameras), state=f64(state))
        obs.header.stamp, obs.header.frame_id = ref_msg, self.profile.base_link
        obs.images = [rgb_to_image(self.frames[c][2], self.frames[c][1], f"{c}_camera_optical_frame")
                      for c in self.cameras]
        if js is not None:
            obs.joint_state = js
        self.pub.publish(obs)
        self.counts["published"] += 1
        if self.depth_pub is not None and self.depth is not None and self.depth[0] == to_ns(ref_msg):
            self.depth_pub.publish(depth_to_image(self.depth[1], ref_msg, f"{self.cameras[0]}_camera_optical_frame"))
            self.counts["published_depth"] += 1
        self.depth = None
        self.frames.clear()

    def _diagnostics(self) -> None:
        self.diag.publish(dict(sorted(self.counts.items())), "publishing observations")


def main(args: list[str] | None = None) -> None:
    run(Perception, args)


if __name__ == "__main__":
    main()
