"""Teleop + recorder over real rclpy / Fast DDS with the MuJoCo sim robot, started from the bringup plan:

- scripted end to end: the arm expert's plan played as joystick (sensor_msgs/Joy) input drives teleop_node in the sim;
  recorder_node saves each finished episode; lerobot loads the >= 5 episodes with delta_timestamps;
- keyboard teleop through a pseudo-terminal moves the sim arm's tool as the keys say;
- kill -9 of recorder_node mid-episode: the saved episodes load with their frame counts, the next run appends.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rclpy.node import Node
from sensor_msgs.msg import Image, Joy, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String
from std_srvs.srv import Trigger

from node_common.msgs import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, from_ns, rgb_to_image, to_ns
from ros_stack_helpers import Feeder, Probe, statuses
from wm_vla.bringup import BringupArgs, NodeSpec, build_plan
from wm_vla.data.lerobot_io import load_dataset
from wm_vla.launcher import Stack
from wm_vla.robots import Kinematics, load_profile
from sim_node.episodes import spin_in_thread
from teleop_node.operator import ScriptedOperator
from wm_vla.data.bags import BagReader
from wm_vla.data.durable import committed_episodes

pytestmark = pytest.mark.ros
ARM = load_profile("arm")
FAMILY = ("touch",)
SEED = 1_000_000


def call_trigger(probe: Probe, service: str, timeout: float = 120.0, attempt_s: float = 15.0) -> Trigger.Response:
    """Call a Trigger service; a request to a server that just restarted (the graph may still hold the killed one)
    is retried with a fresh client."""
    deadline = time.monotonic() + timeout
    while True:
        client = probe.node.create_client(Trigger, service)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"no service {service}"
            future = client.call_async(Trigger.Request())
            try:
                probe.wait(future.done, min(attempt_s, max(0.1, deadline - time.monotonic())), f"{service} to answer")
                return future.result()
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        finally:
            probe.node.destroy_client(client)


def start_recording(probe: Probe, node: str = "/recorder_node", timeout: float = 60.0, attempt_s: float = 15.0
                    ) -> Trigger.Response:
    """`<node>/start`, retried while the recorder has not yet had a sample of every stream (it never blocks)."""
    deadline = time.monotonic() + timeout
    while True:
        res = call_trigger(probe, f"{node}/start", attempt_s=attempt_s)
        if res.success or "no data yet" not in res.message or time.monotonic() > deadline:
            return res
        time.sleep(0.5)


class Robot:
    """Probe side: the latest joint state, the sim status, service calls."""

    def __init__(self, probe: Probe) -> None:
        n: Node = probe.node
        self.probe, self.lock = probe, threading.Lock()
        self.q: np.ndarray | None = None
        self.status: dict[str, Any] = {}
        n.create_subscription(JointState, ARM.topics.joint_states, self._on_js, SENSOR_QOS)
        n.create_subscription(String, "/sim/status", self._on_status, LATCHED_QOS)

    def _on_js(self, msg: JointState) -> None:
        pos = dict(zip(msg.name, msg.position))
        with self.lock:
            self.q = np.array([pos[j] for j in ARM.action.names])

    def _on_status(self, msg: String) -> None:
        with self.lock:
            self.status = json.loads(msg.data)

    def call(self, service: str, timeout: float = 120.0) -> Trigger.Response:
        return call_trigger(self.probe, service, timeout)

    def tcp(self) -> np.ndarray:
        assert self.q is not None
        kin = Kinematics(ARM.load_model())
        return kin.link_pose(dict(zip(ARM.arm_joints, self.q[:6])), ARM.tool_link)[:3, 3]


@pytest.fixture(scope="module")
def sim(ros_domain: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Robot, Path]]:
    logs = tmp_path_factory.mktemp("teleop_logs")
    plan = [n for n in build_plan(BringupArgs(robot="sim", tasks=FAMILY, seed=SEED, teleop="joy")) if n.name == "sim_robot"]
    with Stack(plan, log_dir=logs / "sim") as stack:
        probe = Probe()
        robot = Robot(probe)
        try:
            probe.wait(lambda: robot.q is not None and robot.status.get("episode") == 0, 120, "the sim robot")
            yield stack, robot, logs
        finally:
            assert not stack.failed(), stack.log("sim_robot")
            probe.close()


@pytest.mark.e2e  # the whole teleop stack for 5 sim episodes: 45 s on an idle 2-core machine, 80 s on a loaded one
def test_scripted_joystick_teleop_records_five_episodes(sim: tuple[Stack, Robot, Path], tmp_path: Path) -> None:
    import rclpy

    _, robot, logs = sim
    root = tmp_path / "teleop_ds"
    plan = [n for n in build_plan(BringupArgs(robot="sim", tasks=FAMILY, seed=SEED, teleop="joy", record=str(root)))
            if n.name in ("teleop_node", "recorder_node")]
    results = []
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    operator = ScriptedOperator("arm", FAMILY, context=ctx)  # the arm expert's plan as joystick input on /joy
    ex, thread = spin_in_thread(operator)
    try:
        with Stack(plan, log_dir=logs / "joy") as stack:
            logs_now = lambda: stack.log("recorder_node")[-3000:] + stack.log("teleop_node")[-3000:]  # noqa: E731
            for episode in range(5):
                r = operator.episode(timeout=60)
                assert r["instruction"] == r["expected_instruction"]
                assert not r["timed_out"], f"episode {episode} never ended: {r}\n{logs_now()}"
                results.append(r)
                try:
                    operator.wait(lambda e=episode: committed_episodes(root) == e + 1, 60, f"episode {episode} saved")
                except TimeoutError as exc:
                    pytest.fail(f"{exc}; the sim reported {r}\n{logs_now()}")
            assert not stack.failed(), logs_now()
    finally:
        ex.shutdown()
        thread.join(5)
        operator.destroy_node()
        rclpy.shutdown(context=ctx)
    assert all(r.get("done") for r in results), results
    assert sum(r["success"] for r in results) >= 3, results  # the teleop path reproduces the expert (6/6 offline)
    ds = load_dataset(root, delta_timestamps={"action": [i / 10 for i in range(8)], "observation.state": [-0.1, 0.0]})
    assert ds.num_episodes == 5
    lengths = [int(n) for n in ds.meta.episodes["length"]]
    assert all(n >= 10 for n in lengths), lengths
    item = ds[lengths[0] // 2]
    assert item["action"].shape == (8, 7) and item["observation.images.front"].shape == (3, 96, 96)
    actions = np.asarray(ds.hf_dataset.with_format(None)["action"])
    assert np.all(np.isfinite(actions)) and np.ptp(actions[:, :6], axis=0).max() > 0.2  # the arm was driven
    tasks = list(ds.meta.tasks.index)
    assert {r["instruction"] for r in results} <= set(tasks)
    assert not np.asarray(ds.hf_dataset.with_format(None)["intervention"]).any()  # no policy: never an intervention


def test_keyboard_teleop_through_a_pty_moves_the_arm(sim: tuple[Stack, Robot, Path]) -> None:
    _, robot, logs = sim
    robot.call("/sim/reset")
    master, slave = os.openpty()
    spec = NodeSpec("teleop_node", "teleop_node", "teleop_node.node",
                    {"robot": "arm", "input": "keyboard", "keyboard_device": os.ttyname(slave), "key_speed": 1.0})
    with Stack([spec], log_dir=logs / "keyboard") as stack:
        cmds = robot.probe.record(Float64MultiArray, "/forward_position_controller/commands", COMMAND_QOS)
        robot.probe.wait(lambda: len(cmds.items) > 5, 60, "keyboard teleop_node commands")
        time.sleep(0.5)
        start = robot.tcp()
        for _ in range(30):  # 'w' held (auto-repeat): +x for ~1.5 s
            os.write(master, b"w")
            time.sleep(0.05)
        time.sleep(0.5)
        after_w = robot.tcp()
        for _ in range(20):  # then 'r': +z for ~1 s
            os.write(master, b"r")
            time.sleep(0.05)
        time.sleep(0.5)
        after_r = robot.tcp()
        assert not stack.failed(), stack.log("teleop_node")
    os.close(master)
    os.close(slave)
    dx, dz = after_w - start, after_r - after_w
    assert dx[0] > 0.05 and abs(dx[1]) < 0.02 and abs(dx[2]) < 0.02, (start, after_w)
    assert dz[2] > 0.03 and abs(dz[0]) < 0.02, (after_w, after_r)


def test_the_sim_ignores_commands_computed_before_its_reset(sim: tuple[Stack, Robot, Path]) -> None:
    """A command whose lineage predates the reset (a stick still deflected, a chunk still streaming) neither starts
    the new episode's clock nor moves its arm; one computed from the new episode's joint state does both. (Before,
    the last episode's commands could drive the freshly reset arm into a cube before the operator's first move.)"""
    _, robot, _ = sim
    js = robot.probe.record(JointState, ARM.topics.joint_states, SENSOR_QOS)
    t_reset = robot.probe.now()
    episode = json.loads(robot.call("/sim/reset").message)["episode"]
    robot.probe.wait(lambda: bool(js.since(t_reset)) and robot.status.get("episode") == episode, 30, "the reset")
    first = js.since(t_reset)[-1][1]
    q0 = np.array([dict(zip(first.name, first.position))[j] for j in ARM.arm_joints])
    new_ns = to_ns(first.header.stamp)
    pub = robot.probe.node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", COMMAND_QOS)
    target = q0 + np.array([0.4, 0, 0, 0, 0, 0])

    def command(lineage_ns: int) -> Float64MultiArray:
        msg = Float64MultiArray(data=target.tolist())
        msg.layout.dim = [MultiArrayDimension(label=f"obs_stamp_ns={lineage_ns}", size=6, stride=6)]
        return msg

    stale0 = int(robot.status.get("stale_commands", 0))
    for _ in range(40):  # from the last episode: 50 ms before this one's reset
        pub.publish(command(new_ns - 50_000_000))
        if int(robot.status.get("stale_commands", 0)) > stale0 + 3:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    assert robot.status["step"] == 0 and robot.status["episode"] == episode, robot.status  # the clock did not start
    assert robot.q is not None and np.allclose(robot.q[:6], q0, atol=1e-3)
    assert int(robot.status["stale_commands"]) > stale0 + 3, robot.status
    for _ in range(40):  # computed from this episode's first joint state
        pub.publish(command(new_ns))
        if robot.status.get("step", 0) > 2:
            break
        time.sleep(0.05)
    robot.probe.wait(lambda: robot.q is not None and robot.q[0] - q0[0] > 0.2, 10, "the arm to follow")
    assert robot.status["last_command_obs_ns"] == new_ns
    robot.probe.node.destroy_publisher(pub)


SYNTHETIC_TOPICS = ("/joint_states", "/forward_position_controller/commands", "/gripper_controller/commands")


class Synthetic:
    """Probe-side camera + joint state + command streams for recorder_node alone (no sim)."""

    def __init__(self, robot: Robot) -> None:
        n = robot.probe.node
        self.node = n
        self.cams = {c: n.create_publisher(Image, f"/test_rec/{c}", SENSOR_QOS) for c in ("front", "wrist")}
        js, arm, grip = (f"/test_rec{t}" for t in SYNTHETIC_TOPICS)
        self.js = n.create_publisher(JointState, js, SENSOR_QOS)
        self.arm = n.create_publisher(Float64MultiArray, arm, COMMAND_QOS)
        self.grip = n.create_publisher(Float64MultiArray, grip, COMMAND_QOS)
        self.k = 0

    def __call__(self) -> None:
        self.k += 1
        stamp = from_ns(self.node.get_clock().now().nanoseconds)
        for cam, pub in self.cams.items():
            pub.publish(rgb_to_image(np.full((48, 48, 3), self.k % 255, np.uint8), stamp, cam))
        js = JointState(name=list(ARM.action.names), position=[0.01 * self.k] * 7)
        js.header.stamp = stamp
        self.js.publish(js)
        self.arm.publish(Float64MultiArray(data=[0.01 * self.k] * 6))
        self.grip.publish(Float64MultiArray(data=[0.02, 0.02]))


def test_recorder_kill9_mid_episode_keeps_saved_episodes_and_restart_appends(
        sim: tuple[Stack, Robot, Path], tmp_path: Path) -> None:
    _, robot, logs = sim
    root = tmp_path / "kill_ds"
    spec = NodeSpec("recorder_node", "recorder_node", "recorder_node.node", {
        "robot": "arm", "root": str(root), "fps": 10, "camera_names": ["front", "wrist"],
        "camera_topics": ["/test_rec/front", "/test_rec/wrist"], "image_size": 32, "min_free_mb": 1.0},
        remappings=tuple((t, f"/test_rec{t}") for t in SYNTHETIC_TOPICS))  # away from the sim robot's topics
    feed = Feeder(Synthetic(robot), 30.0)
    try:
        saved = []
        with Stack([spec], log_dir=logs / "rec1") as stack:
            for _ in range(2):
                res = start_recording(robot.probe)
                assert res.success, res.message + stack.log("recorder_node")[-2000:]
                time.sleep(1.5)
                res = robot.call("/recorder_node/stop")
                assert res.success, res.message
                saved.append(int(res.message.split(": ")[1].split()[0]))
            assert start_recording(robot.probe).success
            time.sleep(1.0)
            stack.procs["recorder_node"].send_signal(signal.SIGKILL)  # mid-episode
            stack.procs["recorder_node"].wait(10)
        assert all(n >= 8 for n in saved), saved
        ds = load_dataset(root)
        assert [int(n) for n in ds.meta.episodes["length"]] == saved
        bag_dir = tmp_path / "bags"
        spec2 = NodeSpec(spec.name, spec.executable, spec.module, {**spec.parameters, "bag_dir": str(bag_dir)},
                         spec.remappings)
        with Stack([spec2], log_dir=logs / "rec2") as stack:  # the next run appends (and keeps a raw mcap too)
            # the graph may still list the killed server: short attempts, retried with a fresh client
            res = start_recording(robot.probe, attempt_s=5.0)
            assert res.success, stack.log("recorder_node")[-2000:]
            time.sleep(1.0)
            res = robot.call("/recorder_node/stop")
            assert res.success and "(3 episodes)" in res.message, res.message
            saved.append(int(res.message.split(": ")[1].split()[0]))
            assert start_recording(robot.probe).success
            time.sleep(1.0)
            stack.procs["recorder_node"].send_signal(signal.SIGKILL)  # mid-episode again: the raw bag keeps episode 2
            stack.procs["recorder_node"].wait(10)
        ds = load_dataset(root, delta_timestamps={"action": [0.0, 0.1]})
        assert [int(n) for n in ds.meta.episodes["length"]] == saved
        (session,) = bag_dir.glob("session_*")
        parts = sorted(session.iterdir())
        assert [(p / "metadata.yaml").is_file() for p in parts] == [True, False]  # closed at the episode's end
        with BagReader(session) as bag:
            counts = bag.message_counts()
            markers = [r.msg.data for r in bag.read("/wm_vla/episode")]
            truncated = bag.issues.counts["truncated"]
        log2 = (logs / "rec2" / "recorder_node.log").read_text(errors="replace")[-3000:]
        assert markers[:2] == ["start", "end"] and markers[2:] in ([], ["start"]) and truncated == 1, (markers, log2)
        assert counts["/test_rec/front"] > 20 and counts["/test_rec/joint_states"] > 20
        assert counts["/test_rec/forward_position_controller/commands"] > 20
    finally:
        feed.stop()


MUX = {"/joint_states": "/mux/joint_states", "/joy": "/mux/joy", "/wm_vla/intervention": "/mux/intervention",
       "/forward_position_controller/commands": "/mux/fwd", "/gripper_controller/commands": "/mux/grip",
       "/wm_vla/policy/forward_position_controller/commands": "/mux/policy_fwd",
       "/wm_vla/policy/gripper_controller/commands": "/mux/policy_grip"}


def test_teleop_takes_over_from_the_policy_and_hands_back_and_recorder_reports_a_missing_camera(
        ros_domain: int, tmp_path: Path) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Bool

    teleop = NodeSpec("teleop_mux", "teleop_node", "teleop_node.node",
                      {"robot": "arm", "input": "joy", "policy_prefix": "/wm_vla/policy", "handback_s": 1.0,
                       "input_timeout_s": 3.0},  # a starved CI machine must not flap between the sources
                      remappings=tuple(MUX.items()))
    recorder = NodeSpec("recorder_missing", "recorder_node", "recorder_node.node",
                        {"robot": "arm", "root": str(tmp_path / "ds"), "camera_names": ["front"],
                         "camera_topics": ["/mux/no_camera"]},
                        remappings=tuple(MUX.items()))
    probe = Probe()
    n = probe.node
    js = n.create_publisher(JointState, "/mux/joint_states", SENSOR_QOS)
    joy = n.create_publisher(Joy, "/mux/joy", SENSOR_QOS)
    policy = n.create_publisher(Float64MultiArray, "/mux/policy_fwd", COMMAND_QOS)
    out = probe.record(Float64MultiArray, "/mux/fwd", COMMAND_QOS)
    flag = probe.record(Bool, "/mux/intervention", LATCHED_QOS)
    diag = probe.record(DiagnosticArray, "/diagnostics", 10)
    policy_q = [0.1] * 6

    def feed_robot() -> None:
        msg = JointState(name=list(ARM.action.names), position=[0.0, 0.3, 1.2, 0.0, 1.4, 0.0, 0.02])
        msg.header.stamp = n.get_clock().now().to_msg()
        js.publish(msg)
        cmd = Float64MultiArray(data=policy_q)
        cmd.layout.dim = [MultiArrayDimension(label="obs_stamp_ns=123", size=6, stride=6)]
        policy.publish(cmd)

    def from_policy(msg: Float64MultiArray) -> bool:
        return list(msg.data) == policy_q

    feed = Feeder(feed_robot, 30.0)
    try:
        with Stack([teleop, recorder], log_dir=tmp_path / "logs") as stack:
            probe.wait(lambda: len(out.items) > 10, 60, "forwarded policy commands")
            assert all(from_policy(m) for _, m in out.since(probe.now() - 0.3))  # the policy drives
            assert flag.items and not flag.items[-1][1].data
            stick = Feeder(lambda: joy.publish(Joy(axes=[0.0, 1.0, 0.0, 0.0, 0.0, 0.0], buttons=[0, 0, 0, 0, 1, 0])),
                           20.0)  # deadman held, stick forward: teleop takes over
            try:
                probe.wait(lambda: flag.items[-1][1].data, 30, "the intervention flag")
                t_switch = probe.now()
                probe.wait(lambda: len(out.since(t_switch + 0.3)) > 10, 30, "teleop commands")
            finally:
                stick.stop()
            took = [m for _, m in out.since(t_switch + 0.3)]  # in-flight policy messages may trail the flag
            assert not any(from_policy(m) for m in took)
            assert took[-1].data[0] == pytest.approx(0.0, abs=0.05) and took[-1].data[1] != pytest.approx(0.3)
            joy.publish(Joy(axes=[0.0] * 6, buttons=[0] * 6))  # released: hand back after 1 s
            probe.wait(lambda: not flag.items[-1][1].data, 30, "the hand-back")
            t1 = probe.now()
            probe.wait(lambda: any(from_policy(m) for _, m in out.since(t1)), 30, "the policy again")
            joy.publish(Joy(axes=[0.0], buttons=[]))  # malformed: counted and reported, the node keeps running

            def rejected() -> int:
                values = [{kv.key: kv.value for kv in st.values} for st in statuses(diag, "teleop_mux")]
                return max((int(v.get("rejected_inputs", 0)) for v in values), default=0)
            probe.wait(lambda: rejected() >= 1, 10, "the rejected joy message on /diagnostics")
            res = call_trigger(probe, "/recorder_missing/start")
            assert not res.success and "MissingStreamError" in res.message and "camera front" in res.message
            probe.wait(lambda: "start failed: cannot start an episode" in stack.log("recorder_missing"), 10,
                       "the refused start in the recorder's log")  # the operator's terminal, not only /diagnostics
            assert not stack.failed(), stack.log("teleop_mux")
    finally:
        feed.stop()
        probe.close()


def test_spacemouse_drives_the_quadruped_and_a_leader_arm_drives_the_arm(ros_domain: int, tmp_path: Path) -> None:
    """teleop_node with the other two inputs (no sim): spacemouse Twist -> clamped TwistStamped cmd_vel, zero after
    the device goes quiet; leader JointState -> follower joint targets within limits (through the safety filter)."""
    from geometry_msgs.msg import Twist, TwistStamped
    from nav_msgs.msg import Odometry

    quad = load_profile("quadruped")
    base = NodeSpec("teleop_quad", "teleop_node", "teleop_node.node",
                    {"robot": "quadruped", "input": "spacemouse", "input_timeout_s": 0.3},
                    remappings=(("/spacenav/twist", "/q/spacenav"), ("/cmd_vel", "/q/cmd_vel"), ("/odom", "/q/odom")))
    leader = NodeSpec("teleop_leader", "teleop_node", "teleop_node.node", {"robot": "arm", "input": "leader"},
                      remappings=tuple((k, v.replace("/mux/", "/lead/")) for k, v in MUX.items()
                                       if k in ("/joint_states", "/forward_position_controller/commands"))
                      + (("/leader/joint_states", "/lead/leader"),))
    probe = Probe()
    n = probe.node
    odom = n.create_publisher(Odometry, "/q/odom", SENSOR_QOS)
    mouse = n.create_publisher(Twist, "/q/spacenav", SENSOR_QOS)
    js = n.create_publisher(JointState, "/lead/joint_states", SENSOR_QOS)
    lead = n.create_publisher(JointState, "/lead/leader", SENSOR_QOS)
    cmd_vel = probe.record(TwistStamped, "/q/cmd_vel", COMMAND_QOS)
    fwd = probe.record(Float64MultiArray, "/lead/fwd", COMMAND_QOS)
    home = [0.0, 0.3, 1.2, 0.0, 1.4, 0.0, 0.02]

    def robots() -> None:
        o = Odometry()
        o.header.stamp = n.get_clock().now().to_msg()
        o.pose.pose.orientation.w = 1.0
        odom.publish(o)
        msg = JointState(name=list(ARM.action.names), position=home)
        msg.header.stamp = n.get_clock().now().to_msg()
        js.publish(msg)

    feed = Feeder(robots, 30.0)
    try:
        with Stack([base, leader], log_dir=tmp_path / "logs") as stack:
            probe.wait(lambda: mouse.get_subscription_count() > 0 and lead.get_subscription_count() > 0, 60,
                       "teleop nodes")
            def inputs() -> None:
                tw = Twist()
                tw.linear.x, tw.angular.z = 1.5, 0.5  # beyond full scale: clipped to the velocity bounds
                mouse.publish(tw)
                lead.publish(JointState(name=list(ARM.action.names), position=[0.2, 0.4, 1.1, 0.0, 1.3, 0.1, 0.04]))

            def moving() -> bool:
                return bool(cmd_vel.items) and cmd_vel.items[-1][1].twist.linear.x == pytest.approx(quad.action.high[0])

            def following() -> bool:
                return bool(fwd.items) and list(fwd.items[-1][1].data) == pytest.approx([0.2, 0.4, 1.1, 0.0, 1.3, 0.1],
                                                                                     abs=1e-6)
            devices = Feeder(inputs, 20.0)
            try:
                probe.wait(moving, 30, "full forward on cmd_vel")
                assert cmd_vel.items[-1][1].twist.angular.z == pytest.approx(0.5 * quad.action.high[2])
                probe.wait(following, 30, "the follower at the leader's joints")
            finally:
                devices.stop()
            probe.wait(lambda: cmd_vel.items[-1][1].twist.linear.x == 0.0 and cmd_vel.items[-1][1].twist.angular.z == 0.0,
                       10, "an explicit zero once the spacemouse is quiet")
            assert not stack.failed(), stack.log("teleop_quad") + stack.log("teleop_leader")
    finally:
        feed.stop()
        probe.close()
