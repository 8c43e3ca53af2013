"""JointTrajectory output (command_interface `joint_trajectory`) over real rclpy / Fast DDS: world_model_node as a
subprocess streaming to the arm's joint_trajectory_controller topic (the gripper stays on its position controller),
and the sim robot executing those trajectories as a JTC reads them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory
from wm_vla_interfaces.msg import ActionCandidates

from node_common.commands import CommandOutputs
from node_common.msgs import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, f32, from_ns, to_ns
from ros_stack_helpers import Probe
from sim_node.episodes import lineage_ns
from test_ros_safety import ARM, DT, FORWARD, GRIPPER, HOME, MAX_AGE, NAMES, Rig, running_rig
from wm_vla.bringup import BringupArgs, build_plan
from wm_vla.launcher import Stack
from wm_vla.robots import parse_profile

pytestmark = pytest.mark.ros
JTC = ARM.controllers["trajectory"]
LIMITS = ARM.load_model().joint_limits(JTC.joints)


class JtcRig(Rig):
    def __init__(self, probe: Probe) -> None:
        super().__init__(probe)
        self.traj = probe.record(JointTrajectory, JTC.topic, COMMAND_QOS)

    def fresh_task(self) -> None:
        super().fresh_task()
        self.traj.clear()


@pytest.fixture(scope="module")
def rig(ros_domain: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JtcRig]:
    with running_rig({"rank": False, "command_interface": "joint_trajectory"}, tmp_path_factory.mktemp("wm_jtc"),
                     JtcRig, lambda r: len(r.traj.items) > 5) as r:
        yield r


def test_jtc_holds_the_measured_position_with_a_start_now_stamp(rig: JtcRig) -> None:
    rig.fresh_task()
    time.sleep(0.3)
    held = rig.traj.since(0.0)
    assert held and not rig.forward.since(0.0), "JointTrajectory replaces the forward controller's commands"
    for _, m in held:
        assert list(m.joint_names) == list(JTC.joints) and len(m.points) == 1
        assert to_ns(m.header.stamp) == 0  # JTC: start on receipt
        assert np.allclose(m.points[0].positions, HOME[:6])  # the measured position, never zeros
        assert to_ns(m.points[0].time_from_start) == round(1e9 * DT)
    assert all(lineage_ns(m) == 0 for _, m in rig.gripper.since(0.0))  # the gripper keeps its position controller


def test_jtc_streams_the_chunk_within_limits_with_the_observation_stamp(rig: JtcRig) -> None:
    rig.fresh_task()
    chunk = np.tile(HOME, (30, 1))
    chunk[:, 0] = np.linspace(0.0, 0.5, 30)  # a slow pan
    chunk[:, 5] = 9.0                        # beyond flange_roll's 2.9 rad limit: clamped, never published raw
    stamp = rig.candidates(chunk)
    rig.probe.wait(lambda: sum(to_ns(m.header.stamp) == stamp for _, m in rig.traj.since(0.0)) > 20, 6.0,
                   "trajectories of the chunk")
    tracked = [(t, m) for t, m in rig.traj.since(0.0) if to_ns(m.header.stamp) == stamp]
    q = np.array([m.points[0].positions for _, m in tracked])
    assert np.all(np.isfinite(q)) and np.all(q >= LIMITS.lower - 1e-9) and np.all(q <= LIMITS.upper + 1e-9)
    assert q[:, 5].max() > HOME[5] + 0.1 and q[:, 0].max() > 0.0  # it moves (velocity-limited)
    for t, m in tracked:
        due_ns = stamp + to_ns(m.points[0].time_from_start)
        # due one period after publishing: after the receipt minus delivery slack, never in the observation's past
        assert due_ns >= stamp + round(1e9 * DT) and due_ns > 1e9 * t - 0.25e9
    assert any(lineage_ns(m) == stamp for _, m in rig.gripper.since(0.0))


def test_jtc_holds_the_last_safe_position_when_observations_stop(rig: JtcRig) -> None:
    rig.fresh_task()
    chunk = np.tile(HOME, (40, 1))
    chunk[:, 0] = np.linspace(0.0, 0.8, 40)
    rig.candidates(chunk)
    time.sleep(0.4)
    rig.feed_obs = False
    deadline = rig.last_obs + MAX_AGE
    time.sleep(MAX_AGE + 0.4)
    after = [m for t, m in rig.traj.since(0.0) if t > deadline + 2 * DT]
    assert after and all(to_ns(m.header.stamp) == 0 and np.allclose(m.points[0].positions, HOME[:6]) for m in after)


def test_unknown_or_missing_command_interface_is_a_clear_error(ros_domain: int) -> None:
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Node("jtc_outputs_probe", context=ctx)
    try:
        with pytest.raises(ValueError, match="'jtc' is not one of"):
            CommandOutputs(node, ARM, interface="jtc")
        text = ARM.to_dict()
        text["controllers"] = {k: v for k, v in text["controllers"].items() if k != "trajectory"}
        no_jtc = parse_profile(yaml.safe_dump(text), "arm_without_jtc")
        with pytest.raises(ValueError, match="no 'joint_trajectory' controller"):
            CommandOutputs(node, no_jtc, interface="joint_trajectory")
        out = CommandOutputs(node, ARM, interface="joint_trajectory")
        assert set(out.pubs) == {JTC.topic, GRIPPER} and FORWARD not in out.pubs
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_sim_robot_executes_jtc_trajectories_from_the_bringup_plan(ros_domain: int, tmp_path: Path) -> None:
    """sim_robot + perception_node + world_model_node from the `wm-vla up --robot sim --command-interface
    joint_trajectory` plan (this process plays the VLA): the sim arm follows the trajectories, lineage end to end."""
    plan = [n for n in build_plan(BringupArgs(robot="sim", rank=False, command_interface="joint_trajectory"))
            if n.name in ("sim_robot", "perception_node", "world_model_node")]
    assert next(n for n in plan if n.name == "world_model_node").parameters["command_interface"] == "joint_trajectory"
    with Stack(plan, log_dir=tmp_path / "logs") as stack:
        probe = Probe()
        js, status = probe.record(JointState, ARM.topics.joint_states, SENSOR_QOS), probe.record(String, "/sim/status",
                                                                                              LATCHED_QOS)
        traj = probe.record(JointTrajectory, JTC.topic, COMMAND_QOS)
        cand_pub = probe.node.create_publisher(ActionCandidates, "/wm_vla/action_candidates", COMMAND_QOS)
        try:
            probe.wait(lambda: bool(traj.items and js.items) or bool(stack.failed()), 60, "sim joint states and holds")
            assert not stack.failed(), stack.log("world_model_node")
            pan = lambda: dict(zip(js.items[-1][1].name, js.items[-1][1].position))["shoulder_pan"]  # noqa: E731
            q0 = np.array([dict(zip(js.items[-1][1].name, js.items[-1][1].position))[n] for n in NAMES])
            chunk = np.tile(q0, (30, 1))
            chunk[:, 0] = q0[0] + np.linspace(0.0, 0.4, 30)
            stamp = 0
            for _ in range(3):  # the first candidates may meet a world_model_node still waiting for observations
                stamp = probe.node.get_clock().now().nanoseconds
                msg = ActionCandidates(k=1, h=30, a=7, action_names=NAMES, actions=f32(chunk[None]))
                msg.header.stamp = from_ns(stamp)
                cand_pub.publish(msg)
                try:
                    probe.wait(lambda: abs(pan() - q0[0]) > 0.2, 5.0, "the sim arm to follow the trajectory")
                    break
                except TimeoutError:
                    continue
            assert abs(pan() - q0[0]) > 0.2, stack.log("world_model_node")[-2000:]
            assert {to_ns(m.header.stamp) for _, m in traj.since(0.0)} >= {stamp}
            probe.wait(lambda: any(json.loads(m.data)["last_command_obs_ns"] == stamp for _, m in status.since(0.0)),
                       5.0, "the sim to report the commands' lineage")
        finally:
            probe.close()
