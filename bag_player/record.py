"""bag_recorder node: record the live stack's inputs and outputs to mcap with `BagRecorder` (rosbags), split by
size/duration. Messages are stored as received (serialised CDR from raw subscriptions, field-exact) with the
receive time as log time, like `ros2 bag record`.

Default topics for the robot profile: camera images, joint states (or odometry), instruction, e-stop, the
stack's Observation / ActionCandidates / RankingResult, the command topics, /diagnostics. `topics` (list of
`name` or `name:pkg/msg/Type`) replaces them; a topic's type is otherwise taken from the ROS graph once a
publisher appears.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from bag_player.node import message_class
from node_common.diagnostics import ERROR, Diagnostics
from node_common.spin import run
from wm_vla.bringup import SIM_CAMERAS, camera_topic
from wm_vla.data.bags.topics import STACK_TOPICS
from wm_vla.data.bags.writer import BagRecorder, RecorderConfig
from wm_vla.data.errors import BagWriteError
from wm_vla.robots import RobotProfile, load_profile

# Best effort matches both reliable and best-effort publishers; depth absorbs bursts between executor turns.
RECORD_QOS = QoSProfile(depth=200, reliability=ReliabilityPolicy.BEST_EFFORT)
LATCHED_RECORD_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
COMMAND_TYPES = {"joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
                 "position_commands": "std_msgs/msg/Float64MultiArray"}


def default_topics(profile: RobotProfile, sim: bool) -> dict[str, str]:
    """topic -> message type that the stack reads and writes for `profile`."""
    t = profile.topics
    cams = ([camera_topic(c) for c in SIM_CAMERAS[profile.name]] if sim else [c.topic for c in profile.cameras])
    out = {cam: "sensor_msgs/msg/Image" for cam in cams}
    if profile.action.kind == "joint_position":
        out[t.joint_states] = "sensor_msgs/msg/JointState"
    if t.odometry:
        out[t.odometry] = "nav_msgs/msg/Odometry"
    out[t.instruction] = "std_msgs/msg/String"
    out[t.e_stop] = "std_msgs/msg/Bool"
    out[STACK_TOPICS["observation"]] = "wm_vla_interfaces/msg/Observation"
    out[STACK_TOPICS["candidates"]] = "wm_vla_interfaces/msg/ActionCandidates"
    out[STACK_TOPICS["ranking"]] = "wm_vla_interfaces/msg/RankingResult"
    for c in profile.controllers.values():
        if c.interface == "twist":
            out[c.topic] = "geometry_msgs/msg/TwistStamped" if c.stamped else "geometry_msgs/msg/Twist"
        elif c.interface in COMMAND_TYPES:
            out[c.topic] = COMMAND_TYPES[c.interface]
    out["/diagnostics"] = "diagnostic_msgs/msg/DiagnosticArray"
    return out


def parse_topics(entries: Sequence[str]) -> dict[str, str | None]:
    """['name' | 'name:pkg/msg/Type', ...] -> {name: type or None (from the graph)}."""
    out: dict[str, str | None] = {}
    for entry in entries:
        name, _, msgtype = entry.partition(":")
        if not name.startswith("/") or (msgtype and msgtype.count("/") != 2):
            raise BagWriteError(f"topic entry {entry!r}: expected '/name' or '/name:pkg/msg/Type'")
        out[name] = msgtype or None
    return out


class BagRecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("bag_recorder")
        self.declare_parameters("", [("robot", "arm"), ("sim", True), ("out", ""), ("topics", [""]),
                                     ("storage", "mcap"), ("split_duration_s", 0.0), ("split_bytes", 0)])
        out = str(self.get_parameter("out").value)
        if not out:
            raise SystemExit("bag_recorder: parameter 'out' (the bag directory) is required")
        profile = load_profile(str(self.get_parameter("robot").value))
        entries = [e for e in self.get_parameter("topics").value if e]
        self.wanted: dict[str, str | None] = (parse_topics(entries) if entries else
                                              dict(default_topics(profile, bool(self.get_parameter("sim").value))))
        self.latched = {profile.topics.instruction, profile.topics.e_stop}
        split_s, split_b = float(self.get_parameter("split_duration_s").value), int(self.get_parameter("split_bytes").value)
        self.rec = BagRecorder(RecorderConfig(Path(out), name="stack", storage=str(self.get_parameter("storage").value),
                                              split_bytes=split_b or None, split_duration_s=split_s or None))
        self.counts: Counter[str] = Counter()
        self.failed: str | None = None
        self.subs: dict[str, Any] = {}
        self.diag = Diagnostics(self, "bag_recorder")
        self._subscribe()
        self.create_timer(0.5, self._subscribe)  # topics whose type comes from the graph, once they appear
        self.create_timer(1.0, self._diagnostics)
        self.get_logger().info(f"recording {len(self.wanted)} topic(s) to {out}")

    def _subscribe(self) -> None:
        graph = dict(self.get_topic_names_and_types())
        for topic, msgtype in self.wanted.items():
            if topic in self.subs:
                continue
            msgtype = msgtype or (graph.get(topic) or [None])[0]
            cls = message_class(msgtype) if msgtype else None
            if cls is None:
                continue
            qos = LATCHED_RECORD_QOS if topic in self.latched else RECORD_QOS
            self.subs[topic] = self.create_subscription(
                cls, topic, lambda raw, t=topic, m=msgtype: self._write(t, m, raw), qos, raw=True)

    def _write(self, topic: str, msgtype: str, raw: bytes) -> None:
        if self.failed:
            self.counts["dropped_after_failure"] += 1
            return
        try:
            self.rec.write_raw(topic, msgtype, raw, self.get_clock().now().nanoseconds)
            self.counts[topic] += 1
        except BagWriteError as exc:  # e.g. disk full: the parts closed so far stay readable
            self.failed = str(exc)
            self.get_logger().error(f"recording stopped: {exc}")
            self.diag.warn(f"recording stopped: {exc}", ERROR)

    def _diagnostics(self) -> None:
        values: dict[str, object] = {"messages": self.rec.messages, "parts": len(self.rec.parts),
                                     "topics_subscribed": len(self.subs), "topics_wanted": len(self.wanted),
                                     **{f"count{t}": n for t, n in sorted(self.counts.items())}}
        self.diag.publish(values, "recording" if not self.failed else f"stopped: {self.failed}")

    def destroy_node(self) -> None:
        try:
            self.rec.close()  # finalise the mcap (summary, index) of the last part
        except BagWriteError as exc:
            self.get_logger().error(f"closing the recording: {exc}")
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run(BagRecorderNode, args)


if __name__ == "__main__":
    main()
