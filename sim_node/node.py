"""sim_robot node: steps a wm_vla.sim world in real time and speaks the real robot's topics.

Publishes joint_states (and /odom for the quadruped) and one rgb8 camera stream per sim camera like a camera
driver, accepts the profile's command topics (JointTrajectory, Float64MultiArray, Twist/TwistStamped), publishes
the task status (JSON on /sim/status, latched) and the episode's instruction, and resets on the `/sim/reset`
service (std_srvs/Trigger; episode n uses seed `seed + n`). With `wait_for_command` the episode's clock (physics,
time limit) starts with its first command, so a stack that is still loading does not lose episode time. A
velocity-commanded base stops (zero twist) after `cmd_timeout_s` without commands; position targets are held.
`camera_hz` > 0 streams the cameras at that rate (the latest rendered scene, freshly stamped) instead of once per
world step, like a 30 Hz camera watching a 10 Hz simulation. With
`sim_clock` it publishes /clock (one world step per tick, `rate_scale` x real time) and stamps everything with it;
the other nodes then run with use_sim_time, so a slow machine slows the world instead of adding latency. The commands' observation stamp is recorded in the
status (`last_command_obs_ns`) so lineage is visible end to end. A command whose lineage is older than the episode's
reset was computed from an earlier episode (a teleop stick still deflected, a chunk still streaming when the reset
came): it is ignored and counted (`stale_commands` in the status), so it neither starts the new episode's clock nor
moves its arm.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rosgraph_msgs.msg import Clock
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from node_common.msgs import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, from_ns, rgb_to_image, to_ns
from node_common.spin import run
from wm_vla.bringup import camera_topic
from wm_vla.sim.registry import make_world
from wm_vla.sim.world import StepResult

os.environ.setdefault("MUJOCO_GL", "egl")


class SimRobot(Node):
    def __init__(self) -> None:
        super().__init__("sim_robot")
        p = self.declare_parameters("", [("world", "arm"), ("seed", 1_000_000), ("task", ""), ("image_size", 96),
                                         ("time_limit_s", 0.0), ("autostart", True), ("rate_scale", 1.0),
                                         ("wait_for_command", True), ("sim_clock", False),
                                         ("cmd_timeout_s", 0.5), ("camera_hz", 0.0)])
        params = {name.name: name.value for name in p}
        self.world = make_world(params["world"], image_size=params["image_size"],
                                time_limit_s=params["time_limit_s"] or None)
        self.profile = self.world.profile
        self.base_seed, self.wait_for_command = int(params["seed"]), bool(params["wait_for_command"])
        self.episode_commands = 0
        self.task = tuple(t.strip() for t in params["task"].split(",") if t.strip()) or None  # families
        self.episode = -1
        self.result: StepResult | None = None
        self.target: np.ndarray | None = None
        self.trajectory: list[tuple[int, dict[str, float]]] = []   # (absolute ns, joint targets)
        self.last_lineage_ns = 0
        self.commands = 0
        self.episode_start_ns = 0  # stamp of the current episode's reset: older lineages belong to an earlier one
        self.stale_commands = 0
        self.cmd_timeout_s = float(params["cmd_timeout_s"])  # velocity commands: like diff_drive's cmd_vel_timeout
        self.last_command_s = time.monotonic()
        self.timed_out = False
        self.js_pub = self.create_publisher(JointState, self.profile.topics.joint_states, SENSOR_QOS)
        self.odom_pub = (self.create_publisher(Odometry, self.profile.topics.odometry, SENSOR_QOS)
                         if self.profile.topics.odometry else None)
        self.cam_pubs = {c: self.create_publisher(Image, camera_topic(c), SENSOR_QOS) for c in self.world.camera_names}
        self.status_pub = self.create_publisher(String, "/sim/status", LATCHED_QOS)
        self.instr_pub = self.create_publisher(String, self.profile.topics.instruction, LATCHED_QOS)
        self._subscribe_commands()
        self.create_service(Trigger, "/sim/reset", self._on_reset)
        self.sim_clock = bool(params["sim_clock"])
        self.clock_ns = self.get_clock().now().nanoseconds  # sim time starts at the wall time, then advances by steps
        self.step_ns = round(1e9 / self.world.fps)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if self.sim_clock else None
        self.timer = self.create_timer(1.0 / (self.world.fps * params["rate_scale"]), self._tick)
        self.camera_hz = float(params["camera_hz"])  # > 0: cameras stream at this rate (latest scene, fresh stamps)
        if self.camera_hz > 0:
            self.create_timer(1.0 / self.camera_hz, self._publish_frames)
        if params["autostart"]:
            self.reset()

    # ----- commands -----
    def _subscribe_commands(self) -> None:
        for spec in self.profile.controllers.values():
            if spec.interface == "twist":
                cls = TwistStamped if spec.stamped else Twist
                self.create_subscription(cls, spec.topic, self._on_twist, COMMAND_QOS)
            elif spec.interface == "position_commands":
                self.create_subscription(Float64MultiArray, spec.topic,
                                         lambda m, j=spec.joints: self._on_positions(j, m), COMMAND_QOS)
            else:
                self.create_subscription(JointTrajectory, spec.topic, self._on_trajectory, COMMAND_QOS)

    def _set(self, values: dict[str, float], lineage_ns: int | None = None) -> None:
        """Apply command values; `lineage_ns` 0 marks a hold (it does not start the episode clock)."""
        if self.target is None or self._stale(lineage_ns):
            return
        if lineage_ns is not None:
            self.last_lineage_ns = lineage_ns
        names = self.profile.action.names
        for name, v in values.items():
            if name in names:
                self.target[names.index(name)] = v
        self.commands += 1
        self.episode_commands += int(lineage_ns != 0)
        self.last_command_s = time.monotonic()
        if self.timed_out:
            self.timed_out = False
            self.get_logger().info("velocity commands resumed")

    def _stale(self, lineage_ns: int | None) -> bool:
        """True (and counted) for a command computed from an observation taken before this episode's reset."""
        if not lineage_ns or lineage_ns >= self.episode_start_ns:
            return False
        self.stale_commands += 1
        return True

    def _command_watchdog(self) -> None:
        """A velocity-commanded base stops when its commands stop (`cmd_timeout_s`, 0 = never): a dead controller
        must not leave it driving. Position-commanded joints keep (hold) their last target, as ros2_control does."""
        if (self.profile.action.kind != "body_velocity" or self.cmd_timeout_s <= 0 or self.timed_out
                or self.target is None or time.monotonic() - self.last_command_s < self.cmd_timeout_s):
            return
        self.target[:] = 0.0
        self.timed_out = True
        self.get_logger().warning(f"no velocity command for {self.cmd_timeout_s:.2f} s: base stopped (zero twist)")

    def _on_positions(self, joints: tuple[str, ...], msg: Float64MultiArray) -> None:
        if len(msg.data) != len(joints) or not np.all(np.isfinite(msg.data)):
            self.get_logger().warning(f"ignoring a position command of length {len(msg.data)} for {joints}")
            return
        lineage = None
        for dim in msg.layout.dim:
            if dim.label.startswith("obs_stamp_ns="):
                lineage = int(dim.label.split("=", 1)[1])
        self._set(dict(zip(joints, msg.data)), lineage)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        """A JTC's reading: point i is due at header.stamp (0: on receipt) + time_from_start; a trajectory with an
        unknown joint or a short/non-finite point is ignored whole. A non-zero stamp (the lineage) starts the episode
        clock like a tracking position command."""
        names = self.profile.action.names + self.profile.gripper_joints
        bad = [j for j in msg.joint_names if j not in names]
        if bad or not msg.points or any(len(pt.positions) != len(msg.joint_names) or not np.all(np.isfinite(pt.positions))
                                        for pt in msg.points):
            self.get_logger().warning(f"ignoring a malformed trajectory for {list(msg.joint_names)} "
                                      f"({len(msg.points)} points{', unknown joints ' + str(bad) if bad else ''})")
            return
        lineage = to_ns(msg.header.stamp)
        if self._stale(lineage):
            return
        start = lineage or self.now_ns()
        self.last_lineage_ns = lineage
        self.episode_commands += int(lineage != 0)
        self.trajectory = [(start + to_ns(pt.time_from_start), dict(zip(msg.joint_names, pt.positions)))
                           for pt in msg.points]

    def _on_twist(self, msg: Twist | TwistStamped) -> None:
        lineage = None
        if isinstance(msg, TwistStamped):
            lineage = to_ns(msg.header.stamp)
            msg = msg.twist
        self._set({"vx": msg.linear.x, "vy": msg.linear.y, "vz": msg.linear.z, "wx": msg.angular.x,
                   "wy": msg.angular.y, "wz": msg.angular.z}, lineage)

    # ----- episode -----
    def _on_reset(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        res.message = json.dumps(self.reset())
        res.success = True
        return res

    def reset(self) -> dict[str, Any]:
        self.episode += 1
        self.episode_start_ns = self.now_ns()  # the new episode's first frames are stamped at or after this
        obs = self.world.reset(self.base_seed + self.episode, family=self.task)
        self.result = StepResult(obs, False, False, False, None)
        kind = self.profile.action.kind
        self.target = np.zeros(len(self.profile.action.names)) if kind == "body_velocity" else obs.state.astype(float)
        self.trajectory = []
        self.episode_commands = 0
        self.instr_pub.publish(String(data=obs.instruction))
        self._publish()
        return self.status()

    def status(self) -> dict[str, Any]:
        r = self.result
        return {"episode": self.episode, "seed": self.world.episode.seed, "instruction": self.world.task.instruction,
                "step": self.world.episode.steps, "done": bool(r and r.done), "success": bool(r and r.success),
                "event": (r.event if r else None), "commands": self.commands, "stale_commands": self.stale_commands,
                "last_command_obs_ns": self.last_lineage_ns, "progress": round(self.world.progress(), 4)}

    def now_ns(self) -> int:
        """Stamp of what the sim publishes: its own clock (/clock) or the node's (wall) clock."""
        return self.clock_ns if self.sim_clock else self.get_clock().now().nanoseconds

    def _tick(self) -> None:
        if self.clock_pub is not None:  # sim time advances one step per tick, also while waiting or frozen
            self.clock_ns += self.step_ns
            self.clock_pub.publish(Clock(clock=from_ns(self.clock_ns)))
        if self.result is None or self.target is None:
            return
        if self.result.done:  # the episode is over: the scene freezes (no frames) until the next reset
            return
        if self.wait_for_command and not self.episode_commands:  # the clock starts with the first command
            self._publish()
            return
        self._command_watchdog()
        now = self.now_ns()
        # the points a JTC reaches by the end of this world step (streamed one-point trajectories are due a command
        # period ahead, less than a step): the step integrates towards the latest of them
        due = [pos for t, pos in self.trajectory if t <= now + self.step_ns]
        if due:
            self._set(due[-1])
        self.result = self.world.step(self.target)
        self._publish()

    def _publish(self) -> None:
        assert self.result is not None
        stamp = from_ns(self.now_ns())
        q = self.world.joint_positions()
        js = JointState(name=list(q), position=list(q.values()))
        js.header.stamp = stamp
        self.js_pub.publish(js)
        if self.odom_pub is not None:
            self.odom_pub.publish(self._odometry(stamp))
        # the frames go last: perception_node, on the same CPU, then need not wait for the status publish
        # (docs/ros_stack.md, the scheduler trace)
        self.status_pub.publish(String(data=json.dumps(self.status())))
        if self.camera_hz <= 0:
            self._publish_frames(stamp)

    def _publish_frames(self, stamp: Any = None) -> None:
        if self.result is None or (stamp is None and self.result.done):  # a finished episode's scene is frozen
            return
        stamp = stamp or from_ns(self.now_ns())
        for cam, pub in self.cam_pubs.items():
            pub.publish(rgb_to_image(self.result.observation.images[cam], stamp, f"{cam}_camera_optical_frame"))

    def _odometry(self, stamp: Any) -> Odometry:
        x, y, yaw, vx, vy, wz = (float(v) for v in self.result.observation.state[:6])  # type: ignore[union-attr]
        msg = Odometry(child_frame_id=self.profile.base_link)
        msg.header.stamp, msg.header.frame_id = stamp, "odom"
        msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
        msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = float(np.sin(yaw / 2)), float(np.cos(yaw / 2))
        msg.twist.twist.linear.x, msg.twist.twist.linear.y, msg.twist.twist.angular.z = vx, vy, wz
        return msg

    def destroy_node(self) -> None:
        self.world.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run(SimRobot, args, threads=1)  # MuJoCo's EGL context belongs to one thread


if __name__ == "__main__":
    main()
