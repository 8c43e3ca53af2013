"""Scripted operator over ROS: the arm expert's plan played as joystick input (wm_vla.teleop.scripted) into
teleop_node, with sim resets and recorder_node episode control. `collect()` brings up sim + teleop + recorder from the
bringup plan and records N teleoperated episodes (`wm-vla teleop collect`)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from node_common.msgs import LATCHED_QOS, SENSOR_QOS
from sim_node.episodes import spin_in_thread
from wm_vla.data.durable import committed_episodes
from wm_vla.robots import load_profile
from wm_vla.teleop.scripted import ExpertJoystick


class ScriptedOperator(Node):
    def __init__(self, robot: str = "arm", family: tuple[str, ...] | None = None, context: Any = None,
                 joy_rate_hz: float = 20.0, max_linear: float = 0.15) -> None:
        """`max_linear`: the teleop_node's gripper speed at full deflection, so that the deflections it sends ask
        for the expert's speeds (capped there)."""
        super().__init__("wm_vla_scripted_operator", context=context)
        self.profile, self.family, self.period = load_profile(robot), family, 1.0 / joy_rate_hz
        self.max_linear = max_linear
        self.lock = threading.Lock()
        self.q: np.ndarray | None = None
        self.status: dict[str, Any] = {}
        self.create_subscription(JointState, self.profile.topics.joint_states, self._on_js, SENSOR_QOS)
        self.create_subscription(String, "/sim/status", self._on_status, LATCHED_QOS)
        self.joy = self.create_publisher(Joy, "/joy", SENSOR_QOS)

    def _on_js(self, msg: JointState) -> None:
        pos = dict(zip(msg.name, msg.position))
        with self.lock:
            self.q = np.array([pos[j] for j in self.profile.action.names])

    def _on_status(self, msg: String) -> None:
        with self.lock:
            self.status = json.loads(msg.data)

    def wait(self, pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)

    def call(self, service: str, timeout: float = 120.0, attempt_s: float = 15.0) -> Trigger.Response:
        """Call a Trigger service; retried with a fresh client (a just-restarted server may miss the first)."""
        deadline = time.monotonic() + timeout
        while True:
            client = self.create_client(Trigger, service)
            try:
                if not client.wait_for_service(timeout_sec=timeout):
                    raise TimeoutError(f"no service {service}")
                future = client.call_async(Trigger.Request())
                try:
                    self.wait(future.done, min(attempt_s, max(0.1, deadline - time.monotonic())),
                              f"{service} to answer")
                    return future.result()
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
            finally:
                self.destroy_client(client)

    def start_recording(self, recorder: str = "/recorder_node", timeout: float = 60.0) -> Trigger.Response:
        """`<recorder>/start`, retried while the recorder still waits for its first samples of some stream."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.call(f"{recorder}/start")
            if res.success or "no data yet" not in res.message or time.monotonic() > deadline:
                return res
            time.sleep(0.5)

    def episode(self, timeout: float = 60.0, recorder: str = "/recorder_node") -> dict[str, Any]:
        """Reset the sim, start recording, drive it with the expert joystick until the sim reports done."""
        self.wait(lambda: self.q is not None and self.joy.get_subscription_count() > 0, 60, "joint states and teleop")
        status = json.loads(self.call("/sim/reset").message)
        op = ExpertJoystick(self.profile, status["seed"], self.family, max_linear=self.max_linear)
        res = self.start_recording(recorder)
        if not res.success:
            raise RuntimeError(f"recorder did not start: {res.message}")
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with self.lock:
                q, st = self.q.copy(), dict(self.status)  # type: ignore[union-attr]
            if st.get("episode") == status["episode"] and st.get("done"):
                break
            axes, buttons = op.joy(q)
            self.joy.publish(Joy(axes=axes, buttons=buttons))
            time.sleep(self.period)
        return {**st, "expected_instruction": op.instruction, "timed_out": not st.get("done")}


def collect(root: Path, episodes: int, seed: int = 0, family: tuple[str, ...] | None = None,
            log_dir: Path | None = None, timeout_s: float = 60.0, fps: int = 0, max_linear: float = 0.25
            ) -> dict[str, Any]:
    """sim_robot + teleop_node (joy) + recorder_node from the bringup plan; the scripted operator teleoperates
    `episodes` episodes, each saved when the sim reports it done. `max_linear`: the teleop gripper speed (m/s) at
    full deflection."""
    from wm_vla.bringup import BringupArgs, build_plan
    from wm_vla.launcher import Stack

    root = Path(root).expanduser().resolve()
    plan = build_plan(BringupArgs(robot="sim", seed=seed, tasks=family, teleop="joy", record=str(root),
                                  record_fps=fps, teleop_max_linear=max_linear))
    t0, results = time.monotonic(), []
    start = committed_episodes(root)
    with Stack(plan, log_dir=log_dir) as stack:
        rclpy.init()
        node = ScriptedOperator("arm", family, max_linear=max_linear)
        ex, thread = spin_in_thread(node)
        try:
            for i in range(episodes):
                r = node.episode(timeout_s)
                node.wait(lambda i=i: committed_episodes(root) >= start + i + 1 or bool(stack.failed()), 120,
                          "the recorder to save the episode")
                if stack.failed():
                    raise RuntimeError(f"a node exited: {stack.failed()}")
                results.append({k: r.get(k) for k in ("episode", "seed", "instruction", "success", "event", "step")})
                print(f"[{i + 1}/{episodes}] seed {r.get('seed')} {r.get('instruction')!r}: "
                      f"{'success' if r.get('success') else r.get('event')} ({committed_episodes(root)} saved)",
                      flush=True)
        finally:
            ex.shutdown()
            thread.join(5)
            node.destroy_node()
            rclpy.try_shutdown()
    ok = sum(bool(r["success"]) for r in results)
    return {"out": str(root), "episodes": len(results), "successes": ok, "dataset_episodes": committed_episodes(root),
            "wall_s": round(time.monotonic() - t0, 1), "results": results}
