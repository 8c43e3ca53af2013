"""Teleop core (ROS-free): device mappings, DLS differential IK on the arm URDF, base velocity, teleop/policy mux."""

from __future__ import annotations

import numpy as np
import pytest

from wm_vla.robots import load_profile
from wm_vla.teleop import (ArmTeleop, BaseTeleop, CommandMux, JoyMapping, KeyMapping, MotionCommand, TeleopConfigError,
                           TeleopInputError, TeleopStateError, leader_targets, twist_command)
from wm_vla.teleop.arm import ArmTeleopConfig

ARM = load_profile("arm")
QUAD = load_profile("quadruped")
HOME = np.array([0.0, 0.3, 1.2, 0.0, 1.4, 0.0, 0.02])


def test_joy_deadman_axes_and_gripper_buttons() -> None:
    joy = JoyMapping()
    axes = [0.3, 0.8, 0.0, -0.5, 0.02, 0.0]   # axis 1 -> x, 0 -> y, 3 -> yaw; 0.02 inside the deadband (z)
    buttons = [0, 1, 0, 0, 1, 0]              # B closes, LB held
    cmd = joy.command(axes, buttons)
    np.testing.assert_allclose(cmd.twist, [0.8, 0.3, 0.0, 0.0, 0.0, -0.5])
    assert cmd.enabled and cmd.gripper == -1
    assert not joy.command(axes, [1, 0, 0, 0, 0, 0]).enabled  # deadman released
    with pytest.raises(TeleopInputError, match="axes"):
        joy.command([0.0, 0.0], buttons)
    with pytest.raises(TeleopInputError, match="NaN"):
        joy.command([float("nan")] * 6, buttons)
    with pytest.raises(TeleopConfigError):
        JoyMapping(axes=(0, 1))


def test_spacemouse_twist_and_keyboard_hold() -> None:
    cmd = twist_command([0.5, 0.0, 0.01], [0.0, 0.0, 2.0], full_scale=1.0)
    np.testing.assert_allclose(cmd.twist, [0.5, 0, 0, 0, 0, 1.0])  # deadband and clip
    with pytest.raises(TeleopInputError):
        twist_command([float("inf"), 0, 0], [0, 0, 0])
    keys = KeyMapping(speed=0.5, hold_s=0.1)
    assert keys.press("w", 1.0) and not keys.press("?", 1.0)
    assert keys.command(1.05).twist[0] == 0.5 and keys.command(1.2).twist[0] == 0.0
    assert not keys.command(1.2).enabled
    keys.press("c", 1.3)
    assert keys.command(1.3).gripper == -1 and keys.command(1.3).gripper == 0  # one close per press
    with pytest.raises(TeleopConfigError):
        KeyMapping(keys={"o": (0, 1.0)})  # collides with the gripper key


def test_arm_cartesian_step_moves_the_tool_along_the_command() -> None:
    arm = ArmTeleop(ARM, ArmTeleopConfig(max_linear=0.1))
    with pytest.raises(TeleopStateError):
        arm.step(MotionCommand(np.zeros(6)), 0.02)
    arm.reset(HOME)
    p0 = arm.tool_pose(HOME)
    q = HOME
    for _ in range(50):  # 1 s at +x full speed: 0.1 m
        q = arm.step(MotionCommand(np.array([1.0, 0, 0, 0, 0, 0])), 0.02)
    p1 = arm.tool_pose(q)
    d = p1[:3, 3] - p0[:3, 3]
    assert d[0] == pytest.approx(0.1, abs=0.01) and abs(d[1]) < 0.01 and abs(d[2]) < 0.01
    rot_err = np.linalg.norm(p1[:3, :3] - p0[:3, :3])
    assert rot_err < 0.05  # orientation held
    assert np.all(q >= ARM.action.low) and np.all(q <= ARM.action.high)
    np.testing.assert_array_equal(arm.step(MotionCommand(np.array([1.0, 0, 0, 0, 0, 0]), enabled=False), 0.02), q)


def test_arm_yaw_rotation_and_gripper() -> None:
    arm = ArmTeleop(ARM, ArmTeleopConfig(max_angular=0.5))
    arm.reset(HOME)
    r0 = arm.tool_pose(HOME)[:3, :3]
    q = HOME
    for _ in range(25):  # 0.5 s at +yaw 0.5 rad/s: 0.25 rad about base z
        q = arm.step(MotionCommand(np.array([0, 0, 0, 0, 0, 1.0])), 0.02)
    r1 = arm.tool_pose(q)[:3, :3]
    rel = r1 @ r0.T
    assert np.arctan2(rel[1, 0], rel[0, 0]) == pytest.approx(0.25, abs=0.03)
    assert arm.step(MotionCommand(np.zeros(6), gripper=1), 0.02)[6] == ARM.action.high[6]
    assert arm.step(MotionCommand(np.zeros(6), gripper=-1), 0.02)[6] == ARM.action.low[6]


def test_arm_limits_and_workspace_are_never_exceeded() -> None:
    arm = ArmTeleop(ARM)
    arm.reset(HOME)
    q = HOME
    for _ in range(150):  # push down into the table and far out
        q = arm.step(MotionCommand(np.array([1.0, 1.0, -1.0, 0, 0, 0])), 0.1)
    assert np.all(q >= ARM.action.low) and np.all(q <= ARM.action.high)
    tcp = arm.tool_pose(q)[:3, 3]
    ws = ARM.workspace
    assert np.all(tcp >= np.array(ws.low) - 0.03) and np.all(tcp <= np.array(ws.high) + 0.03)
    assert np.all(arm.target_pos >= ws.low) and np.all(arm.target_pos <= ws.high)
    with pytest.raises(TeleopInputError):
        arm.reset(np.zeros(3))


def test_leader_arm_maps_joints_by_name_within_limits() -> None:
    arm = ArmTeleop(ARM)
    arm.reset(HOME)
    names = [*reversed(ARM.action.names), "extra"]
    values = leader_targets(names, [*reversed([0.1, 5.0, 0.5, 0.0, 0.3, 0.0, 0.01]), 9.0], ARM.action.names)
    q = arm.set_targets(values)
    assert q[1] == ARM.action.high[1] and q[0] == pytest.approx(0.1)  # 5.0 rad clamped to the limit
    with pytest.raises(TeleopInputError, match="lacks"):
        leader_targets(["shoulder_pan"], [0.0], ARM.action.names)
    with pytest.raises(TeleopInputError, match="names"):
        leader_targets(["a", "b"], [0.0], ARM.action.names)


def test_base_velocity_clamped_and_zero_without_deadman() -> None:
    base = BaseTeleop(QUAD)
    v = base.step(MotionCommand(np.array([1.0, -1.0, 0, 0, 0, 0.5])))
    np.testing.assert_allclose(v, [QUAD.action.high[0], QUAD.action.low[1], 0.5 * QUAD.action.high[2]])
    np.testing.assert_array_equal(base.step(MotionCommand(np.ones(6), enabled=False)), np.zeros(3))
    with pytest.raises(TeleopConfigError):
        BaseTeleop(ARM)
    with pytest.raises(TeleopConfigError):
        ArmTeleop(QUAD)


def test_mux_takes_over_and_hands_back() -> None:
    mux = CommandMux(handback_s=0.5)
    assert mux.update(False, 0.0) == "policy" and not mux.intervening
    assert mux.update(True, 1.0) == "teleop" and mux.intervening and mux.takeovers == 1
    assert mux.update(False, 1.3) == "teleop"          # still within the hand-back delay
    assert mux.update(False, 1.6) == "policy" and mux.handbacks == 1
    solo = CommandMux(policy=False)
    assert solo.update(False, 0.0) == "teleop" and not solo.intervening


@pytest.mark.parametrize("max_linear", [0.15, 0.25])
def test_scripted_joystick_asks_for_the_expert_speed_up_to_the_teleop_cap(max_linear: float) -> None:
    """The scripted operator (`wm-vla teleop collect --max-linear`) deflects the stick so that the teleop mapping
    moves the gripper at the expert's waypoint speed, capped at the teleop's full-deflection speed."""
    from wm_vla.teleop.scripted import ExpertJoystick

    op = ExpertJoystick(ARM, seed=3, family="touch", max_linear=max_linear)
    wp = op.waypoints[op.index]
    twist, _ = op.twist(HOME)
    speed = np.abs(twist[:3]) * max_linear          # m/s per axis that ArmTeleop will command
    assert np.all(np.abs(twist) <= 1.0)
    assert speed.max() == pytest.approx(min(wp.speed, max_linear), rel=1e-6)  # the first waypoint is far away
