"""Safety of the command path over real rclpy / Fast DDS: the world_model_node runs as a subprocess (passthrough
ranking, no models) and this process plays perception, the robot's joint_states, the VLA's candidates and the
e-stop button, recording every command the node publishes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from wm_vla_interfaces.msg import ActionCandidates, Observation, RankingResult

from node_common.msgs import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, f32, from_ns, to_ns
from ros_stack_helpers import Feeder, Probe, Received
from sim_node.episodes import lineage_ns
from wm_vla.bringup import NodeSpec
from wm_vla.launcher import Stack
from wm_vla.robots import load_profile

pytestmark = pytest.mark.ros
ARM = load_profile("arm")
NAMES = list(ARM.action.names)
HOME = np.array([0.0, -0.5, 1.2, 0.0, 0.9, 0.0, 0.0])
FORWARD = ARM.controllers["forward"].topic
GRIPPER = ARM.controllers["gripper"].topic
DT = 1.0 / ARM.control_rate_hz
MAX_AGE = ARM.max_obs_age_ms / 1e3  # the profile's stale-observation threshold (the node's default)


class Rig:
    def __init__(self, probe: Probe) -> None:
        n = probe.node
        self.probe = probe
        self.obs_pub = n.create_publisher(Observation, "/wm_vla/observation", SENSOR_QOS)
        self.js_pub = n.create_publisher(JointState, ARM.topics.joint_states, SENSOR_QOS)
        self.cand_pub = n.create_publisher(ActionCandidates, "/wm_vla/action_candidates", COMMAND_QOS)
        self.estop_pub = n.create_publisher(Bool, ARM.topics.e_stop, LATCHED_QOS)
        self.instr_pub = n.create_publisher(String, ARM.topics.instruction, LATCHED_QOS)
        self.forward = probe.record(Float64MultiArray, FORWARD, COMMAND_QOS)
        self.gripper = probe.record(Float64MultiArray, GRIPPER, COMMAND_QOS)
        self.diag = probe.record(DiagnosticArray, "/diagnostics", 10)
        self.rankings = probe.record(RankingResult, "/wm_vla/ranking_result", COMMAND_QOS)
        self.feed_obs = True
        self.last_obs = 0.0
        self.feeder = Feeder(self._feed, 50.0)

    def _feed(self) -> None:
        now = self.probe.node.get_clock().now()
        self.joint_state(HOME, now.to_msg())
        if self.feed_obs:
            obs = Observation()
            obs.header.stamp = now.to_msg()
            self.obs_pub.publish(obs)
            self.last_obs = now.nanoseconds * 1e-9

    def joint_state(self, q: np.ndarray, stamp: object = None) -> None:
        js = JointState(name=[*NAMES, "finger_right_joint"], position=[*map(float, q), float(q[-1])])
        js.header.stamp = stamp or self.probe.node.get_clock().now().to_msg()
        self.js_pub.publish(js)

    def candidates(self, chunk: np.ndarray, instruction: str = "") -> int:
        """Publish one candidate (1, H, A) stamped now, computed for `instruction`, and wait until the node has taken
        it (its RankingResult echoes the stamp); returns the stamp in ns. Reliable delivery from this busy test
        process can lag by seconds, so the handshake (not a sleep) decides when the chunk is in."""
        now = self.probe.node.get_clock().now().nanoseconds
        msg = ActionCandidates(k=1, h=chunk.shape[0], a=chunk.shape[1], action_names=NAMES, actions=f32(chunk[None]),
                               instruction=instruction)
        msg.header.stamp = from_ns(now)
        self.cand_pub.publish(msg)
        self.probe.wait(lambda: any(to_ns(m.header.stamp) == now for _, m in self.rankings.since(0.0)), 10.0,
                        "the node to take the candidates")
        return now

    def diag_value(self, key: str, since: float = 0.0) -> int | None:
        """The newest value of an integer key on the world_model_node's /diagnostics received after `since`."""
        for _, m in reversed(self.diag.since(since)):
            for st in m.status:
                for kv in st.values:
                    if st.name.endswith("world_model_node") and kv.key == key:
                        return int(float(kv.value))
        return None

    def e_stop(self, engaged: bool) -> None:
        """Press / release the e-stop and wait until the node reports it on /diagnostics."""
        t0 = self.probe.now()
        self.estop_pub.publish(Bool(data=engaged))
        self.probe.wait(lambda: self.diag_value("e_stop", t0) == int(engaged), 10.0, f"the node to see e_stop={engaged}")

    def fresh_task(self) -> None:
        """Release the e-stop, resume observations, clear the node's chunks (a new instruction) and the records;
        returns once the node has counted the new instruction (published on /diagnostics)."""
        self.feed_obs = True
        self.e_stop(False)
        before = self.diag_value("instructions") or 0
        self.instr_pub.publish(String(data="test"))
        self.probe.wait(lambda: (self.diag_value("instructions") or 0) > before, 10.0, "the node to take the new task")
        time.sleep(0.1)
        for box in (self.forward, self.gripper, self.diag, self.rankings):
            box.clear()


@contextmanager
def running_rig(params: dict[str, Any], logs: Path, rig_cls: type[Rig] = Rig,
                ready: Callable[[Any], bool] = lambda r: len(r.forward.items) > 5, timeout: float = 60.0
                ) -> Iterator[Any]:
    """world_model_node (arm, `params` over the defaults) as a subprocess and a rig around it, once `ready`
    (default: it streams hold commands)."""
    spec = NodeSpec("world_model_node", "world_model_node", "world_model_node.node",
                    {"robot": "arm", "max_obs_age_ms": 1e3 * MAX_AGE, **params})
    with Stack([spec], log_dir=logs) as stack:
        probe = Probe()
        rig = rig_cls(probe)
        try:
            probe.wait(lambda: ready(rig) or bool(stack.failed()), timeout, "hold commands from world_model_node")
            assert not stack.failed(), stack.log("world_model_node")
            yield rig
        finally:
            rig.feeder.stop()
            probe.close()


@pytest.fixture(scope="module")
def rig(ros_domain: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with running_rig({"rank": False}, tmp_path_factory.mktemp("wm_node")) as r:
        yield r


def tracked(box: Received, t0: float = 0.0) -> list[tuple[float, np.ndarray, int]]:
    return [(t, np.array(m.data), lineage_ns(m)) for t, m in box.since(t0)]


def test_before_any_chunk_the_arm_holds_its_measured_position_never_zeros(rig: Rig) -> None:
    rig.fresh_task()
    time.sleep(0.2)
    cmds = tracked(rig.forward)
    assert cmds and all(np.allclose(q, HOME[:6]) and lin == 0 for _, q, lin in cmds)


def test_out_of_limit_candidate_is_clamped_never_published_raw(rig: Rig) -> None:
    rig.fresh_task()
    chunk = np.tile(HOME, (40, 1))   # 4 s of actions
    chunk[:, 5] = 9.0    # flange_roll limit is 2.9 rad
    chunk[:, 6] = -1.0   # finger limit is [0, 0.04] m
    stamp = rig.candidates(chunk)
    rig.probe.wait(lambda: any(lin == stamp and q[5] >= 2.9 - 1e-6 for _, q, lin in tracked(rig.forward)), 6.0,
                   "flange_roll at its limit")
    arm = [(q, lin) for _, q, lin in tracked(rig.forward) if lin == stamp]
    grip = [np.array(m.data) for _, m in rig.gripper.since(0.0) if lineage_ns(m) == stamp]
    assert len(arm) > 20 and grip, "the chunk was streamed with its observation stamp as lineage"
    roll = np.array([q[5] for q, _ in arm])
    assert roll.max() == pytest.approx(2.9)  # driven to the limit (velocity-limited), never beyond
    assert all(np.all(g >= 0.0) for g in grip)
    stream = tracked(rig.forward)  # consecutive commands of the chunk (a watchdog hold in between restarts the ramp)
    steps = [abs(b[1][5] - a[1][5]) for a, b in zip(stream, stream[1:]) if a[2] == b[2] == stamp]
    assert steps and max(steps) <= 3.0 * DT + 1e-9  # URDF velocity limit of flange_roll: 3 rad/s


def test_stale_observations_hold_within_two_control_periods(rig: Rig) -> None:
    rig.fresh_task()
    chunk = np.tile(HOME, (16, 1))
    chunk[:, 0] = np.linspace(0.0, 0.6, 16)   # a slow pan: commands keep changing
    rig.candidates(chunk)
    time.sleep(0.4)
    rig.feed_obs = False                      # the camera / perception stops
    time.sleep(0.1)
    deadline = rig.last_obs + MAX_AGE
    time.sleep(MAX_AGE + 0.3)
    cmds = tracked(rig.forward)
    late_tracking = [t for t, _, lin in cmds if lin != 0 and t > deadline]
    assert len(late_tracking) <= 2, f"{len(late_tracking)} motion commands after the deadline (max 2 periods)"
    after = [(q, lin) for t, q, lin in cmds if t > deadline]
    assert after and all(lin == 0 and np.allclose(q, HOME[:6]) for q, lin in after[len(late_tracking):])  # held


def test_e_stop_blocks_motion_until_released(rig: Rig) -> None:
    rig.fresh_task()
    rig.e_stop(True)
    t0 = rig.probe.now()
    chunk = np.tile(HOME, (16, 1))
    chunk[:, 0] = 0.5
    rig.candidates(chunk)
    time.sleep(0.6)
    during = tracked(rig.forward, t0)
    assert len(during) > 5 and all(np.allclose(q, HOME[:6]) and lin == 0 for _, q, lin in during)
    rig.e_stop(False)
    time.sleep(0.2)
    t1 = rig.probe.now()
    assert all(lin == 0 for _, _, lin in tracked(rig.forward, t1)), "the stopped chunk must not resume"
    stamp = rig.candidates(chunk)
    time.sleep(0.5)
    after = [q for _, q, lin in tracked(rig.forward, t1) if lin == stamp]
    assert after and after[-1][0] > 0.1  # a fresh chunk moves again


def test_nan_joint_state_is_rejected_with_a_diagnostic(rig: Rig) -> None:
    rig.fresh_task()
    bad = HOME.copy()
    bad[2] = np.nan
    t0 = rig.probe.now()

    def statuses() -> list[DiagnosticStatus]:
        return [s for _, m in rig.diag.since(t0) for s in m.status if s.name.endswith("world_model_node")]

    def rejected() -> int:
        return max((int(kv.value) for s in statuses() for kv in s.values
                    if kv.key == "rejected_joint_state_non_finite"), default=0)

    def send_bad() -> bool:  # best-effort sensor QoS: keep sending until the node has counted a few
        rig.joint_state(bad)
        time.sleep(0.05)
        return rejected() >= 3

    rig.probe.wait(send_bad, 10.0, "counted joint-state rejections")
    assert any(s.level == DiagnosticStatus.ERROR and "non_finite" in s.message for s in statuses())
    cmds = tracked(rig.forward, t0)
    assert cmds and all(np.all(np.isfinite(q)) and np.allclose(q, HOME[:6]) for _, q, _ in cmds)


def test_quadruped_twist_is_limited_carries_lineage_and_zeroes_on_stop(ros_domain: int, tmp_path: Path) -> None:
    quad = load_profile("quadruped")
    spec = NodeSpec("world_model_node", "world_model_node", "world_model_node.node",
                    {"robot": "quadruped", "rank": False})
    with Stack([spec], log_dir=tmp_path) as stack:
        probe = Probe()
        n = probe.node
        obs_pub = n.create_publisher(Observation, "/wm_vla/observation", SENSOR_QOS)
        cand_pub = n.create_publisher(ActionCandidates, "/wm_vla/action_candidates", COMMAND_QOS)
        estop = n.create_publisher(Bool, quad.topics.e_stop, LATCHED_QOS)
        twists = probe.record(TwistStamped, quad.controllers["base"].topic, COMMAND_QOS)
        feed_obs = [True]

        def feed() -> None:
            if feed_obs[0]:
                obs = Observation()
                obs.header.stamp = n.get_clock().now().to_msg()
                obs_pub.publish(obs)

        feeder = Feeder(feed, 50.0)
        try:
            probe.wait(lambda: len(twists.items) > 5 and cand_pub.get_subscription_count() > 0
                       or bool(stack.failed()), 60, "cmd_vel from world_model_node")
            assert not stack.failed(), stack.log("world_model_node")
            assert all(m.twist.linear.x == 0 and m.twist.angular.z == 0 for _, m in twists.items)  # no chunk: zero
            chunk = np.tile([2.0, 0.0, -3.0], (16, 1))  # beyond the 0.6 m/s and 1 rad/s limits
            stamp = n.get_clock().now().nanoseconds
            msg = ActionCandidates(k=1, h=16, a=3, action_names=list(quad.action.names), actions=f32(chunk[None]))
            msg.header.stamp = from_ns(stamp)
            t0 = probe.now()
            cand_pub.publish(msg)
            time.sleep(0.5)
            moving = [m for _, m in twists.since(t0) if to_ns(m.header.stamp) == stamp]
            assert moving and all(m.twist.linear.x == pytest.approx(0.6) and m.twist.angular.z == pytest.approx(-1.0)
                                  for m in moving)
            estop.publish(Bool(data=True))
            time.sleep(0.3)
            t1 = probe.now()
            time.sleep(0.3)
            stopped = twists.since(t1)
            assert len(stopped) > 5 and all(m.twist.linear.x == 0 and m.twist.angular.z == 0 for _, m in stopped)
        finally:
            feeder.stop()
            probe.close()


def test_e_stop_mid_chunk_holds_at_once_and_the_chunk_never_resumes(rig: Rig) -> None:
    rig.fresh_task()
    chunk = np.tile(HOME, (40, 1))
    chunk[:, 0] = np.linspace(0.0, 1.0, 40)   # a 4 s pan: still streaming when the button is pressed
    stamp = rig.candidates(chunk)
    rig.probe.wait(lambda: sum(lin == stamp for _, _, lin in tracked(rig.forward)) > 10, 6.0, "the chunk streaming")
    t_press = rig.probe.now()
    rig.estop_pub.publish(Bool(data=True))
    rig.probe.wait(lambda: any(lin == 0 for _, _, lin in tracked(rig.forward, t_press)), 5.0, "a hold command")
    after = tracked(rig.forward, t_press)
    first_hold = next(t for t, _, lin in after if lin == 0)
    late = [t for t, _, lin in after if lin == stamp and t > first_hold]
    print(f"\n[fault] e-stop mid-chunk: press -> first hold command received {1e3 * (first_hold - t_press):.1f} ms")
    assert not late, "no motion command of the stopped chunk after the first hold"
    rig.e_stop(True)  # wait for the node to report it, then release mid-chunk (the chunk had 2 s left)
    time.sleep(0.2)
    rig.e_stop(False)
    t_release = rig.probe.now()
    time.sleep(0.4)
    cmds = tracked(rig.forward, t_release)
    assert len(cmds) > 5 and all(lin == 0 and np.allclose(q, HOME[:6]) for _, q, lin in cmds), \
        "after release the arm holds until a fresh chunk; the stopped chunk never resumes"


def test_joint_state_of_the_wrong_length_is_rejected_with_an_error_and_the_arm_holds(rig: Rig) -> None:
    rig.fresh_task()
    t0 = rig.probe.now()
    before = rig.diag_value("rejected_joint_state_length_mismatch") or 0
    short = JointState(name=NAMES, position=[float(v) for v in HOME[:4]])  # 7 names, 4 positions

    def send_short() -> bool:  # best-effort sensor QoS: keep sending until the node has counted a few
        short.header.stamp = rig.probe.node.get_clock().now().to_msg()
        rig.js_pub.publish(short)
        time.sleep(0.05)
        return (rig.diag_value("rejected_joint_state_length_mismatch", t0) or 0) >= before + 3

    rig.probe.wait(send_short, 10.0, "counted length_mismatch rejections")
    errors = [s for _, m in rig.diag.since(t0) for s in m.status
              if s.name.endswith("world_model_node") and s.level == DiagnosticStatus.ERROR]
    assert errors and "length_mismatch" in errors[-1].message and "4" in errors[-1].message
    cmds = tracked(rig.forward, t0)
    assert cmds and all(lin == 0 and np.allclose(q, HOME[:6]) for _, q, lin in cmds)  # held, never zeros
    t1 = rig.probe.now()  # recovery: only well-formed joint states (the feeder's) from here on
    rig.probe.wait(lambda: any(s.level == DiagnosticStatus.OK for _, m in rig.diag.since(t1 + 1.1) for s in m.status
                               if s.name.endswith("world_model_node")), 6.0, "an OK diagnostic once the fault clears")
