"""recorder_node: camera images + robot state + the commanded action (teleop or policy) -> a crash-safe LeRobot dataset.

Streams are resampled to `fps` with as-of alignment (wm_vla.data.recorder.EpisodeRecorder); every saved episode is
durable (wm_vla.data.durable): a kill -9 loses at most the episode being recorded, and a restart on the same `root`
appends. Episode control: std_srvs/Trigger services `~/start`, `~/stop` (save), `~/discard`, `~/rerecord`, and keys
on a terminal (`keyboard_device` or stdin when `keys` is true: n start, s save, d discard, r rerecord). With
`status_topic` (the sim's JSON status) an episode is saved when the sim reports it done. The instruction topic sets
the task string; `intervention_topic` (std_msgs/Bool from teleop_node) marks frames where teleop overrode the policy.
/diagnostics: status, episodes, frames, fps achieved vs target, dropped frames by reason. With `bag_dir` every
recorded message also goes to a rosbag2 (mcap) session there, with "start" / "end" / "discard" markers on
/wm_vla/episode (discarded takes stay in the raw bag); a new part starts after each end or discard, so the session
directory (read whole by `BagReader`) keeps every finished episode through a kill -9.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger

from node_common.diagnostics import ERROR, Diagnostics
from node_common.msgs import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, image_to_rgb, odometry_values, to_s
from node_common.spin import run
from teleop_node.node import INTERVENTION_TOPIC
from wm_vla.data.bags.simbag import MARKER_TOPIC
from wm_vla.data.bags.writer import BagRecorder
from wm_vla.data.bags.writer import RecorderConfig as BagConfig
from wm_vla.data.errors import DataError, RecorderError
from wm_vla.data.recorder import RECORDING, EpisodeRecorder, RecorderConfig
from wm_vla.robots import load_profile
from wm_vla.runtime.errors import SafetyError
from wm_vla.runtime.safety import check_joint_state

KEYS = {"n": "start", "s": "stop", "d": "discard", "r": "rerecord"}


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder_node")
        decl = self.declare_parameters("", [
            ("robot", "arm"), ("root", ""), ("repo_id", ""), ("fps", 0), ("camera_names", [""]),
            ("camera_topics", [""]), ("compressed", False), ("image_size", 96), ("task", ""), ("max_age_ms", 200.0),
            ("action_lead_ms", 0.0), ("sync_lag_ms", 30.0), ("use_videos", False), ("min_free_mb", 100.0),
            ("status_topic", ""), ("intervention_topic", INTERVENTION_TOPIC), ("keys", False),
            ("keyboard_device", ""), ("autostart", False), ("bag_dir", ""),
            ("bag_storage", "mcap"), ("bag_split_s", 0.0)])
        p: dict[str, Any] = {d.name: d.value for d in decl}
        if not p["root"]:
            raise ValueError("recorder_node needs the dataset directory: root:=/path/to/dataset")
        self.profile = prof = load_profile(p["robot"])
        cams = [n for n in p["camera_names"] if n] or [c.name for c in prof.cameras]
        topics = [t for t in p["camera_topics"] if t] or [c.topic for c in prof.cameras]
        if len(cams) != len(topics):
            raise ValueError(f"camera_names {cams} and camera_topics {topics} differ in length")
        self.camera_topics = dict(zip(cams, topics))
        self.fps = int(p["fps"] or prof.policy_rate_hz)
        self.lag = p["sync_lag_ms"] / 1e3
        self.lock = threading.RLock()
        self.bag_lock = threading.Lock()
        self.diag = Diagnostics(self, "recorder")
        self.rec = EpisodeRecorder(RecorderConfig(
            p["root"], self.fps, tuple(cams), tuple(prof.state.names), tuple(prof.action.names), prof.name,
            int(p["image_size"]), p["task"], p["max_age_ms"] / 1e3, p["action_lead_ms"] / 1e3, bool(p["use_videos"]),
            p["repo_id"], float(p["min_free_mb"])))
        self.get_logger().info(f"recording {self.rec.cfg.root} at {self.fps} Hz: {self.rec.episodes} episodes there"
                               + (" (resumed)" if self.rec.dataset.resumed else ""))
        self.action = np.full(len(prof.action.names), np.nan)
        self.intervention = False
        self.ticks: list[float] = []
        self.next_t: float | None = None
        self.arrivals: dict[str, deque[float]] = {c: deque(maxlen=120) for c in cams}
        self.last_error = ""
        self.bag = self._open_bag(p)
        self._subscribe(p)
        for name in ("start", "stop", "discard", "rerecord"):
            self.create_service(Trigger, f"~/{name}", lambda req, res, n=name: self._on_service(n, res))
        self.reader = None
        if p["keys"] or p["keyboard_device"]:
            from wm_vla.teleop.keyboard import KeyReader

            self.reader = KeyReader(self._on_key, p["keyboard_device"])
        self.create_timer(1.0 / self.fps, self._tick)
        self.create_timer(1.0, self._diagnostics)
        if p["autostart"]:
            self.create_timer(0.5, self._autostart)

    # ----- optional raw bag of everything recorded (mcap by default) -----
    def _open_bag(self, p: dict[str, Any]) -> BagRecorder | None:
        """A rosbag2 of the recorded topics next to the dataset, with episode markers (std_msgs/String "start" /
        "end" on MARKER_TOPIC, so `wm-vla bag to-lerobot --marker` splits it the same way)."""
        if not p["bag_dir"]:
            return None
        out = Path(p["bag_dir"]).expanduser() / time.strftime("session_%Y%m%d_%H%M%S")
        return BagRecorder(BagConfig(out, storage=p["bag_storage"], split_duration_s=p["bag_split_s"] or None))

    def _to_bag(self, topic: str, msg: Any) -> None:
        if self.bag is None:
            return
        cls = type(msg)
        msgtype = f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"
        with self.bag_lock:
            try:
                self.bag.write_raw(topic, msgtype, serialize_message(msg), self.get_clock().now().nanoseconds)
            except DataError as exc:
                self.rec.total_dropped["bag_write_error"] += 1
                self.diag.warn(f"bag: {exc}")

    def _mark(self, text: str) -> None:
        self._to_bag(MARKER_TOPIC, String(data=text))

    def _finish_bag_part(self) -> None:
        """At an episode boundary: close the bag's part (the next message starts a new one), so a kill -9 loses at
        most the episode being recorded from the raw bag too, as from the dataset."""
        if self.bag is None:
            return
        with self.bag_lock:
            try:
                self.bag.close()
            except DataError as exc:
                self.rec.total_dropped["bag_write_error"] += 1
                self.diag.warn(f"bag: {exc}")

    # ----- inputs -----
    def _subscribe(self, p: dict[str, Any]) -> None:
        prof = self.profile
        cls = CompressedImage if p["compressed"] else Image
        for cam, topic in self.camera_topics.items():
            self._sub(cls, topic, lambda m, c=cam: self._on_image(c, m), SENSOR_QOS)
        if prof.state.kind == "odometry":
            self._sub(Odometry, prof.topics.odometry or "/odom", self._on_odom, SENSOR_QOS)
        else:
            self._sub(JointState, prof.topics.joint_states, self._on_joint_state, SENSOR_QOS)
        names = prof.action.names
        for spec in prof.controllers.values():
            if spec.interface == "twist":
                self._sub(TwistStamped if spec.stamped else Twist, spec.topic, self._on_twist, COMMAND_QOS)
            elif spec.interface == "position_commands":
                cols = [names.index(j) if j in names else -1 for j in spec.joints]
                self._sub(Float64MultiArray, spec.topic, lambda m, c=cols: self._on_positions(c, m), COMMAND_QOS)
        self._sub(String, prof.topics.instruction, self._on_instruction, LATCHED_QOS)
        self._sub(Bool, p["intervention_topic"], self._on_intervention, LATCHED_QOS)
        if p["status_topic"]:
            self.create_subscription(String, p["status_topic"], self._on_status, LATCHED_QOS)

    def _sub(self, cls: type, topic: str, callback: Callable[[Any], None], qos: Any) -> None:
        """Subscribe; with a bag, every message also goes there (under its resolved topic name)."""
        def both(msg: Any, name: str = self.resolve_topic_name(topic)) -> None:
            self._to_bag(name, msg)
            callback(msg)
        self.create_subscription(cls, topic, both if self.bag is not None else callback, qos)

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except (DataError, SafetyError) as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            self.rec.total_dropped[f"rejected_{reason}"] += 1
            self.diag.warn(f"input rejected: {exc}")

    def _on_image(self, cam: str, msg: Image | CompressedImage) -> None:
        self._guard(lambda: self._add_image(cam, msg))

    def _add_image(self, cam: str, msg: Image | CompressedImage) -> None:
        self.arrivals[cam].append(time.monotonic())
        rgb = image_to_rgb(msg)
        with self.lock:
            self.rec.add_image(cam, to_s(msg.header.stamp), rgb)

    def _on_joint_state(self, msg: JointState) -> None:
        def add() -> None:
            q = check_joint_state(msg.name, msg.position, self.profile.state.names)
            with self.lock:
                self.rec.add_state(to_s(msg.header.stamp), q)
        self._guard(add)

    def _on_odom(self, msg: Odometry) -> None:
        values = odometry_values(msg)

        def add() -> None:
            with self.lock:
                self.rec.add_state(to_s(msg.header.stamp), np.array([values[n] for n in self.profile.state.names]))
        self._guard(add)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _command(self, cols: list[int], values: list[float]) -> None:
        with self.lock:
            for c, v in zip(cols, values):
                if c >= 0:
                    self.action[c] = v
            if np.all(np.isfinite(self.action)):
                self._guard(lambda: self.rec.add_action(self._now(), self.action.copy(), self.intervention))

    def _on_positions(self, cols: list[int], msg: Float64MultiArray) -> None:
        if len(msg.data) != len(cols):
            self.rec.total_dropped["rejected_command_length"] += 1
            return
        self._command(cols, list(msg.data))

    def _on_twist(self, msg: Twist | TwistStamped) -> None:
        tw = msg.twist if isinstance(msg, TwistStamped) else msg
        v = {"vx": tw.linear.x, "vy": tw.linear.y, "vz": tw.linear.z, "wx": tw.angular.x, "wy": tw.angular.y,
             "wz": tw.angular.z}
        names = self.profile.action.names
        self._command(list(range(len(names))), [v.get(n, 0.0) for n in names])

    def _on_instruction(self, msg: String) -> None:
        with self.lock:
            self.rec.set_task(msg.data)

    def _on_intervention(self, msg: Bool) -> None:
        with self.lock:
            self.intervention = bool(msg.data)

    def _on_status(self, msg: String) -> None:
        try:
            status = json.loads(msg.data)
            done, success = bool(status.get("done")), bool(status.get("success"))
        except (ValueError, AttributeError):
            return
        if done and self.rec.status == RECORDING:
            self._do("stop", success)

    # ----- episode control -----
    def _do(self, action: str, success: bool | None = None) -> tuple[bool, str]:
        with self.lock:
            try:
                if action == "start":  # streams not there yet: refused at once (callers retry), never blocks the spin
                    self.rec.start()
                    self._mark("start")
                    self.ticks = []
                    text = f"recording episode {self.rec.episodes}"
                elif action == "stop":
                    self._mark("end")
                    n = self.rec.stop(success)
                    self._finish_bag_part()
                    text = f"saved episode {self.rec.episodes - 1}: {n} frames ({self.rec.episodes} episodes)"
                elif action == "discard":
                    self._mark("discard")
                    text = f"discarded {self.rec.discard()} frames"
                    self._finish_bag_part()
                else:
                    self._mark("discard")
                    text = f"discarded {self.rec.rerecord()} frames; recording episode {self.rec.episodes} again"
                    self._finish_bag_part()
                    self._mark("start")
            except RecorderError as exc:
                self.last_error = str(exc)
                self.diag.warn(f"{action}: {exc}", ERROR)
                self.get_logger().error(f"{action} failed: {exc}")  # the operator's terminal, not only /diagnostics
                return False, f"{type(exc).__name__}: {exc}"
        self.get_logger().info(text)
        return True, text

    def _on_service(self, action: str, res: Trigger.Response) -> Trigger.Response:
        res.success, res.message = self._do(action)
        return res

    def _on_key(self, ch: str) -> None:
        if ch in KEYS:
            threading.Thread(target=self._do, args=(KEYS[ch],), daemon=True).start()

    def _autostart(self) -> None:
        if self.rec.status != RECORDING and not self.rec.missing_streams():
            self._do("start")

    # ----- resampling clock -----
    def _tick(self) -> None:
        """Add every frame due since the last tick (frame times on a 1/fps grid of the stamp clock, so a late timer
        does not thin the dataset; at most 1 s of backlog)."""
        t_now = self._now() - self.lag
        period = 1.0 / self.fps
        with self.lock:
            if self.rec.status != RECORDING:
                self.next_t = None
                return
            if self.next_t is None or t_now - self.next_t > 1.0:
                self.next_t = t_now
            while self.next_t <= t_now:
                if self.rec.tick(self.next_t):
                    self.ticks.append(time.monotonic())
                self.next_t += period
            del self.ticks[:-4 * self.fps]

    def _diagnostics(self) -> None:
        with self.lock:
            stats = self.rec.stats()
            ticks = list(self.ticks)
        achieved = (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 2 and ticks[-1] > ticks[0] else 0.0
        values = {**stats, "fps_target": self.fps, "fps_achieved": round(achieved, 2), "root": str(self.rec.cfg.root)}
        for cam, times in self.arrivals.items():  # what the cameras deliver (the recorder cannot beat it)
            recent = [t for t in times if t > time.monotonic() - 2.0]
            values[f"camera_{cam}_hz"] = round((len(recent) - 1) / (recent[-1] - recent[0]), 2) if len(recent) > 2 else 0.0
        if self.last_error:
            values["last_error"] = self.last_error
        self.diag.publish(values, stats["status"])

    def destroy_node(self) -> None:
        if self.reader is not None:
            self.reader.close()
        with self.lock:
            self.rec.close()  # an unsaved episode is not complete: dropped; saved ones are already durable
        if self.bag is not None:
            with self.bag_lock:
                self.bag.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run(RecorderNode, args)  # single-threaded (node_common/worker.py explains why)


if __name__ == "__main__":
    main()
