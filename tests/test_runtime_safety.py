"""Chunk executor and safety filter (ROS-free core of the command path), on the real arm/quadruped profiles."""

from __future__ import annotations

import numpy as np
import pytest

from wm_vla.robots import load_profile
from wm_vla.runtime.errors import ChunkError, InvalidJointStateError, SafetyError
from wm_vla.runtime.executor import ChunkExecutor, ExecutorConfig
from wm_vla.runtime.safety import SafetyFilter, check_joint_state

ARM = load_profile("arm")
QUAD = load_profile("quadruped")
HOME = np.array([0.0, -0.5, 1.2, 0.0, 0.9, 0.0, 0.0])  # TCP inside the arm workspace
DT = 1.0 / ARM.control_rate_hz


def arm_filter(**kw: float) -> SafetyFilter:
    f = SafetyFilter.for_profile(ARM, **kw)
    f.joint_state(HOME)
    f.observation(0.0)
    return f


def test_home_pose_is_inside_the_workspace() -> None:
    assert arm_filter().workspace_excess(HOME) == 0.0


# ----- executor -----
def test_executor_drops_actions_already_in_the_past() -> None:
    ex = ChunkExecutor(ExecutorConfig(action_dt=0.1, action_dim=2))
    chunk = np.arange(16, dtype=float)[:, None].repeat(2, 1)
    first = ex.submit(chunk, stamp=10.0, now=10.25)  # 250 ms of inference latency
    assert first == 2 and ex.dropped_actions == 2
    np.testing.assert_array_equal(ex.target(10.25), [2, 2])
    np.testing.assert_array_equal(ex.target(10.31), [3, 3])
    assert ex.remaining(10.31) == 12
    assert ex.target(11.6) is None  # exhausted: the caller holds


def test_executor_rejects_malformed_and_stale_chunks() -> None:
    ex = ChunkExecutor(ExecutorConfig(action_dt=0.1, action_dim=2, max_actions=8))
    with pytest.raises(ChunkError, match="shape"):
        ex.submit(np.zeros((4, 3)), 0.0, 0.0)
    with pytest.raises(ChunkError, match="non-finite"):
        ex.submit(np.array([[0.0, np.nan]]), 0.0, 0.0)
    with pytest.raises(ChunkError, match="in the past"):
        ex.submit(np.zeros((16, 2)), 0.0, 0.85)  # only 8 actions used: 0.8 s
    ex.submit(np.zeros((16, 2)), 5.0, 5.0)
    with pytest.raises(ChunkError, match="older observation"):
        ex.submit(np.zeros((16, 2)), 4.0, 5.0)
    assert ex.rejected_chunks == 4 and ex.accepted_chunks == 1
    with pytest.raises(ChunkError, match="action_dt"):
        ChunkExecutor(ExecutorConfig(action_dt=0.0, action_dim=2))


def test_executor_blends_at_seams_and_interpolates() -> None:
    ex = ChunkExecutor(ExecutorConfig(action_dt=0.1, action_dim=1, blend_s=0.1, interpolate=True))
    ex.submit(np.zeros((16, 1)), 0.0, 0.0)
    np.testing.assert_allclose(ex.target(0.05), [0.0])
    ex.submit(np.ones((16, 1)), 0.5, 0.55)
    np.testing.assert_allclose(ex.target(0.55), [0.0])     # seam: starts from the old chunk's target
    np.testing.assert_allclose(ex.target(0.60), [0.5])     # halfway through the blend
    np.testing.assert_allclose(ex.target(0.70), [1.0])
    ex2 = ChunkExecutor(ExecutorConfig(action_dt=0.1, action_dim=1, interpolate=True))
    ex2.submit(np.array([[0.0], [1.0]]), 0.0, 0.0)
    np.testing.assert_allclose(ex2.target(0.025), [0.25])


def test_seam_through_the_safety_filter_never_steps_beyond_the_velocity_limit() -> None:
    f = arm_filter()
    ex = ChunkExecutor(ExecutorConfig(action_dt=0.1, action_dim=7))
    ex.submit(np.tile(HOME, (16, 1)), 0.0, 0.0)
    jump = HOME + np.array([0.8, 0.3, -0.3, 0.0, 0.0, 0.0, 0.03])
    assert f.workspace_excess(jump) == 0.0
    outs = []
    for i in range(80):
        now = i * DT
        if i == 10:
            ex.submit(np.tile(jump, (16, 1)), now, now)
        f.observation(now)
        outs.append(f.filter(ex.target(now), now).values)
    steps = np.abs(np.diff(np.array(outs), axis=0)) / DT
    vmax = ARM.load_model().joint_limits(ARM.action.names).velocity
    assert np.all(steps <= vmax + 1e-6)
    np.testing.assert_allclose(outs[-1], jump)  # and it gets there


# ----- safety filter -----
def test_extra_commands_between_ticks_share_the_periods_velocity_budget() -> None:
    f = arm_filter()
    target = HOME + 1.0
    first = f.filter(target, 0.0).values          # a tick
    mid = f.filter(target, 0.5 * DT).values       # a chunk's first command, sent between ticks
    nxt = f.filter(target, DT).values             # the next tick
    vmax = ARM.load_model().joint_limits(ARM.action.names).velocity
    assert np.all(np.abs(nxt - first) <= vmax * DT + 1e-9)
    assert np.all(np.abs(mid - first) <= vmax * 0.5 * DT + 1e-9) and np.any(mid != first)



def test_out_of_limit_target_is_clamped_never_passed_raw() -> None:
    f = arm_filter(velocity_scale=1e6)
    target = HOME.copy()
    target[1] = 5.0     # far beyond shoulder_lift's 1.9 rad
    target[6] = -0.2    # gripper below 0
    cmd = f.filter(target, 0.01)
    low, high = np.array(ARM.action.low), np.array(ARM.action.high)
    assert cmd.values is not None and np.all(cmd.values <= high) and np.all(cmd.values >= low)
    assert "joint_limit" in cmd.reasons and cmd.values[1] == pytest.approx(1.9) or cmd.state == "hold"


def test_workspace_bound_holds_instead_of_leaving_the_box() -> None:
    f = arm_filter(velocity_scale=1e6)
    out = HOME.copy()
    out[1], out[2] = 1.9, 0.5   # arm stretched down through the table: TCP below z = 0.01
    assert f.workspace_excess(out) > 0.1
    inside = HOME + np.array([0.05] * 6 + [0.02])
    assert f.filter(inside, 0.01).state == "track"
    f.joint_state(HOME)           # the robot lags behind: the hold is the last command, not a jump back
    cmd = f.filter(out, 0.02)
    assert cmd.state == "hold" and cmd.reasons == ("workspace",)
    np.testing.assert_array_equal(cmd.values, inside)


def test_e_stop_holds_until_released() -> None:
    f = arm_filter()
    moved = HOME + 0.01
    f.filter(moved, 0.01)
    f.set_e_stop(True)
    f.joint_state(moved)
    held = [f.filter(HOME + 0.3, 0.02 + i * DT) for i in range(10)]
    assert all(c.state == "hold" and c.reasons == ("e_stop",) for c in held)
    assert all(np.array_equal(c.values, moved) for c in held)  # the measured position, no motion
    f.set_e_stop(False)
    f.observation(0.3)
    assert f.filter(HOME + 0.3, 0.3).state == "track"


def test_stale_observation_watchdog_holds_within_two_control_periods() -> None:
    f = arm_filter()
    age = ARM.max_obs_age_ms / 1e3
    assert f.filter(HOME, age - 1e-3).state == "track"
    cmds = [f.filter(HOME + 0.1, age + i * DT) for i in range(1, 3)]
    assert cmds[0].state == "hold" and cmds[0].reasons == ("stale_observation",)
    assert all(np.array_equal(c.values, HOME) for c in cmds)


def test_hold_is_the_position_never_zeros_and_nothing_without_state() -> None:
    f = SafetyFilter.for_profile(ARM)
    cmd = f.filter(HOME, 0.0)            # no observation yet, no joint state
    assert cmd.state == "hold" and cmd.values is None
    f.joint_state(HOME)
    cmd = f.filter(None, 0.0)
    assert cmd.state == "hold" and np.array_equal(cmd.values, HOME) and np.any(cmd.values != 0)


def test_reset_forgets_old_positions_until_a_fresh_joint_state() -> None:
    f = arm_filter()
    far = HOME + 0.4
    f.joint_state(far)
    f.filter(None, 0.01)              # holding at the old measured position
    f.reset()                         # new task: the robot may have been moved (a sim reset teleports it)
    assert f.filter(None, 0.02).values is None
    f.joint_state(HOME)
    np.testing.assert_array_equal(f.filter(None, 0.03).values, HOME)


def test_non_finite_target_is_refused() -> None:
    f = arm_filter()
    cmd = f.filter(np.full(7, np.nan), 0.01)
    assert cmd.state == "hold" and cmd.reasons == ("bad_target",)


@pytest.mark.parametrize(("names", "positions", "reason"), [
    (list(ARM.action.names), [0.0] * 6 + [float("nan")], "non_finite"),
    (list(ARM.action.names), [0.0] * 6 + [float("inf")], "non_finite"),
    (list(ARM.action.names), [0.0] * 6, "length_mismatch"),
    (list(ARM.action.names)[:5], [0.0] * 5, "missing_joints"),
])
def test_malformed_joint_state_is_rejected_with_a_reason(names: list[str], positions: list[float], reason: str) -> None:
    with pytest.raises(InvalidJointStateError) as err:
        check_joint_state(names, positions, ARM.action.names)
    assert err.value.reason == reason and isinstance(err.value, SafetyError)


def test_joint_state_is_reordered_to_the_action_order() -> None:
    names = list(reversed(ARM.action.names)) + ["finger_right_joint"]
    q = check_joint_state(names, list(range(8)), ARM.action.names)
    np.testing.assert_array_equal(q, [6, 5, 4, 3, 2, 1, 0])


def test_acceleration_limit_brakes_without_overshoot() -> None:
    f = arm_filter(max_acceleration=4.0)
    target = HOME + np.array([0.5, 0, 0, 0, 0, 0, 0])
    outs = []
    for i in range(200):
        f.observation(i * DT)
        outs.append(f.filter(target, i * DT).values)
    q = np.array(outs)[:, 0]
    acc = np.abs(np.diff(q, 2)) / DT**2
    assert acc.max() <= 4.0 + 1e-6 and q.max() <= target[0] + 1e-3 and q[-1] == pytest.approx(target[0])


def test_quadruped_twist_limits_and_zero_on_stop() -> None:
    f = SafetyFilter.for_profile(QUAD, max_acceleration=2.0)
    cmds = []
    for i in range(40):
        f.observation(i * 0.02)
        cmds.append(f.filter(np.array([5.0, 0.0, -3.0]), i * 0.02))
    assert "twist_limit" in cmds[0].reasons and "acceleration_limit" in cmds[0].reasons
    np.testing.assert_allclose(cmds[0].values, [0.04, 0.0, -0.04])
    np.testing.assert_allclose(cmds[-1].values, [0.6, 0.0, -1.0])  # the profile's twist bounds
    f.set_e_stop(True)
    stop = f.filter(np.array([0.3, 0.0, 0.0]), 0.8)
    assert stop.state == "stop" and np.array_equal(stop.values, np.zeros(3))
    f.set_e_stop(False)
    f.observation(0.8)
    assert f.filter(None, 0.81).values.tolist() == [0.0, 0.0, 0.0]  # no chunk: explicit zero
