"""teleop_node: an input device drives the robot through the same command topics as the policy, safety filter included.

`input`: keyboard (terminal raw mode: stdin or `keyboard_device`), joy (sensor_msgs/Joy, deadman button), spacemouse
(geometry_msgs/Twist from spacenav), leader (sensor_msgs/JointState of a leader arm). Arms: Cartesian twist ->
differential IK -> Float64MultiArray on the forward position + gripper controllers (lineage label as the policy's:
"obs_stamp_ns=<joint state stamp>", 0 while holding); quadrupeds: TwistStamped/Twist on cmd_vel (zero on release).
With `policy_prefix` set, the policy's commands (its command topics remapped under that prefix) are forwarded while
the operator is idle; operator activity takes over (intervention, std_msgs/Bool on `intervention_topic`) and hands
back `handback_s` after release. Every outgoing command goes through wm_vla.runtime.safety.SafetyFilter (limits,
velocity, workspace, e-stop, stale joint state -> hold, never zeros under position control).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import numpy as np
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import Joy, JointState
from std_msgs.msg import Bool, String

from node_common.commands import CommandOutputs, checked_joint_state
from node_common.diagnostics import Diagnostics
from node_common.msgs import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, to_ns, to_s
from node_common.spin import run
from wm_vla.robots import load_profile
from wm_vla.runtime.safety import SafeCommand, SafetyFilter
from wm_vla.teleop import (ArmTeleop, BaseTeleop, CommandMux, JoyMapping, KeyMapping, MotionCommand, TeleopError,
                           leader_targets, twist_command)
from wm_vla.teleop.arm import ArmTeleopConfig
from wm_vla.teleop.inputs import INPUTS

INTERVENTION_TOPIC = "/wm_vla/intervention"


class TeleopNode(Node):
    def __init__(self) -> None:
        super().__init__("teleop_node")
        decl = self.declare_parameters("", [
            ("robot", "arm"), ("input", "keyboard"), ("rate_hz", 0.0), ("keyboard_device", ""),
            ("joy_topic", "/joy"), ("twist_topic", "/spacenav/twist"), ("leader_topic", "/leader/joint_states"),
            ("joy_axes", [1, 0, 4, -1, -1, 3]), ("joy_signs", [1.0] * 6), ("deadman_button", 4),
            ("open_button", 0), ("close_button", 1), ("deadband", 0.05), ("spacemouse_full_scale", 1.0),
            ("key_speed", 0.5), ("key_hold_s", 0.15), ("max_linear", 0.15), ("max_angular", 0.8), ("frame", "base"),
            ("input_timeout_s", 0.5), ("policy_prefix", ""), ("handback_s", 0.5),
            ("intervention_topic", INTERVENTION_TOPIC), ("velocity_scale", 1.0)])
        p: dict[str, Any] = {d.name: d.value for d in decl}
        self.profile = prof = load_profile(p["robot"])
        if p["input"] not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {p['input']!r}")
        self.input, self.timeout = p["input"], float(p["input_timeout_s"])
        self.dt = 1.0 / (p["rate_hz"] or prof.control_rate_hz)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.diag = Diagnostics(self, "teleop")
        self.arm = (ArmTeleop(prof, ArmTeleopConfig(max_linear=p["max_linear"], max_angular=p["max_angular"],
                                                    frame=p["frame"])) if prof.action.kind == "joint_position" else None)
        self.base = BaseTeleop(prof) if self.arm is None else None
        self.safety = SafetyFilter.for_profile(prof, self.dt, velocity_scale=p["velocity_scale"])
        self.mux = CommandMux(p["handback_s"], policy=bool(p["policy_prefix"]))
        self.cmd, self.cmd_time = MotionCommand.idle(), -1e9
        self.leader: dict[str, float] | None = None
        self.measured: np.ndarray | None = None
        self.state_ns = 0
        self.need_reset = True
        self.out = CommandOutputs(self, prof)  # the policy's command topics
        self._inputs(p)
        self.intervention_pub = self.create_publisher(Bool, p["intervention_topic"], LATCHED_QOS)
        self.intervention_pub.publish(Bool(data=False))
        if p["policy_prefix"]:
            self._policy_inputs(p["policy_prefix"].rstrip("/"))
        self.create_timer(self.dt, self._tick)
        self.create_timer(1.0, self._diagnostics)

    def _publish(self, cmd: SafeCommand, lineage_ns: int) -> None:
        if cmd.values is not None:
            self.out.publish(cmd.values, lineage_ns)

    # ----- inputs -----
    def _inputs(self, p: dict[str, Any]) -> None:
        prof = self.profile
        self.keys: KeyMapping | None = None
        self.reader = None
        if self.input == "joy":
            self.joy = JoyMapping(tuple(p["joy_axes"]), tuple(p["joy_signs"]), p["deadband"], p["deadman_button"],
                                  p["open_button"], p["close_button"])
            self.create_subscription(Joy, p["joy_topic"], self._on_joy, SENSOR_QOS)
        elif self.input == "spacemouse":
            self.full_scale = float(p["spacemouse_full_scale"])
            self.create_subscription(Twist, p["twist_topic"], self._on_twist, SENSOR_QOS)
        elif self.input == "leader":
            if self.arm is None:
                raise ValueError("the leader input drives arms only")
            self.create_subscription(JointState, p["leader_topic"], self._on_leader, SENSOR_QOS)
        else:
            from wm_vla.teleop.keyboard import KeyReader

            self.keys = KeyMapping(speed=p["key_speed"], hold_s=p["key_hold_s"])
            self.reader = KeyReader(self._on_key, p["keyboard_device"])
            self.get_logger().info("keyboard teleop: w/s x, a/d y, r/f z, q/e yaw, j/l roll, i/k pitch, o open, "
                                   "c close, space stop")
        if prof.action.kind == "joint_position":
            self.create_subscription(JointState, prof.topics.joint_states, self._on_joint_state, SENSOR_QOS)
        elif prof.topics.odometry:
            self.create_subscription(Odometry, prof.topics.odometry, self._on_odom, SENSOR_QOS)
        self.create_subscription(Bool, prof.topics.e_stop, self._on_e_stop, LATCHED_QOS)
        self.create_subscription(String, prof.topics.instruction, self._on_instruction, LATCHED_QOS)

    def _set_cmd(self, cmd: MotionCommand) -> None:
        with self.lock:
            self.cmd, self.cmd_time = cmd, time.monotonic()
        self.counts["inputs"] += 1

    def _reject(self, exc: Exception) -> None:
        self.counts["rejected_inputs"] += 1
        self.diag.warn(f"input rejected: {exc}")

    def _on_joy(self, msg: Joy) -> None:
        try:
            self._set_cmd(self.joy.command(list(msg.axes), list(msg.buttons)))
        except TeleopError as exc:
            self._reject(exc)

    def _on_twist(self, msg: Twist) -> None:
        try:
            self._set_cmd(twist_command([msg.linear.x, msg.linear.y, msg.linear.z],
                                        [msg.angular.x, msg.angular.y, msg.angular.z], self.full_scale))
        except TeleopError as exc:
            self._reject(exc)

    def _on_leader(self, msg: JointState) -> None:
        try:
            values = leader_targets(list(msg.name), list(msg.position), self.profile.action.names)
        except TeleopError as exc:
            self._reject(exc)
            return
        with self.lock:
            self.leader = values
        self._set_cmd(MotionCommand(np.zeros(6), 0, True))

    def _on_key(self, ch: str) -> None:
        if ch == "\x03":  # Ctrl-C in raw mode
            self.counts["ctrl_c"] += 1
            return
        assert self.keys is not None
        with self.lock:
            known = self.keys.press(ch, time.monotonic())
        self.counts["keys" if known else "unknown_keys"] += 1

    def _on_joint_state(self, msg: JointState) -> None:
        q = checked_joint_state(msg, self.profile.action.names, self.counts, self.diag)
        if q is None:
            return
        with self.lock:
            self.measured, self.state_ns = q, to_ns(msg.header.stamp)
            self.safety.joint_state(q)
            self.safety.observation(to_s(msg.header.stamp))

    def _on_odom(self, msg: Odometry) -> None:
        with self.lock:
            self.state_ns = to_ns(msg.header.stamp)
            self.safety.observation(to_s(msg.header.stamp))

    def _on_e_stop(self, msg: Bool) -> None:
        with self.lock:
            self.safety.set_e_stop(msg.data)
        self.get_logger().warning(f"e_stop {'ENGAGED' if msg.data else 'released'}")

    def _on_instruction(self, msg: String) -> None:
        with self.lock:  # a new episode (the robot may have been reset): re-anchor on the next joint state
            self.safety.reset()
            self.need_reset = True
            self.measured = None

    # ----- policy pass-through (mux) -----
    def _policy_inputs(self, prefix: str) -> None:
        """The policy's commands arrive on its command topics remapped under `prefix`; forwarded while it drives."""
        for topic, pub in self.out.pubs.items():
            self.create_subscription(pub.msg_type, f"{prefix}{topic}", lambda m, pb=pub: self._on_policy(pb, m),
                                     COMMAND_QOS)

    def _on_policy(self, pub: Any, msg: Any) -> None:
        with self.lock:
            forward = self.mux.source == "policy"
        if forward:
            pub.publish(msg)
            self.counts["policy_forwarded"] += 1

    # ----- control loop -----
    def _current(self, now: float) -> MotionCommand:
        if self.keys is not None:
            return self.keys.command(now)
        if now - self.cmd_time > self.timeout:  # the device went quiet: stop moving
            return MotionCommand.idle()
        return self.cmd

    def _tick(self) -> None:
        now = time.monotonic()
        ros_now = self.get_clock().now().nanoseconds * 1e-9
        with self.lock:
            cmd = self._current(now)
            before = self.mux.source
            source = self.mux.update(cmd.enabled, now)
            if source != before:
                self.intervention_pub.publish(Bool(data=self.mux.intervening))
                self.get_logger().info(f"command source: {source}")
                self.need_reset = True  # take over from where the robot is
            if source != "teleop":
                return
            target = self._target(cmd)
            safe = self.safety.filter(target, ros_now)
            lineage = self.state_ns if (safe.state == "track" and cmd.enabled) else 0
        self._publish(safe, lineage)

    def _target(self, cmd: MotionCommand) -> np.ndarray | None:
        if self.base is not None:
            return self.base.step(cmd)
        assert self.arm is not None
        if self.need_reset:
            if self.measured is None:
                return None
            self.arm.reset(self.measured)
            self.need_reset = False
        if self.leader is not None and self.input == "leader":
            target = self.arm.set_targets(self.leader)
            self.leader = None
            return target
        return self.arm.step(cmd, self.dt)

    def _diagnostics(self) -> None:
        with self.lock:
            values = {**self.counts, "source": self.mux.source, "intervening": int(self.mux.intervening),
                      "takeovers": self.mux.takeovers, "handbacks": self.mux.handbacks, "input": self.input,
                      **{f"safety_{k}": v for k, v in self.safety.counts.items()}}
        self.diag.publish(values, f"{self.input} -> {self.mux.source}")

    def destroy_node(self) -> None:
        if self.reader is not None:
            self.reader.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run(TeleopNode, args)  # single-threaded (node_common/worker.py explains why); keys come on their own thread


if __name__ == "__main__":
    main()
