"""wm_vla.robots: URDF parsing, kinematics against MuJoCo, robot profiles and their bad inputs."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from wm_vla.robots import (
    Kinematics,
    KinematicsError,
    ProfileError,
    UrdfError,
    data_root,
    load_profile,
    load_urdf,
    parse_profile,
    parse_urdf,
)

URDFS = ["urdf/wm_arm6.urdf", "urdf/wm_quad.urdf"]


def urdf_path(rel: str) -> Path:
    return data_root() / rel


def random_configs(model, count: int, seed: int = 0) -> list[dict[str, float]]:
    limits = model.joint_limits()
    rng = np.random.default_rng(seed)
    return [
        dict(zip(limits.names, rng.uniform(limits.lower, limits.upper), strict=True))
        for _ in range(count)
    ]


@pytest.mark.parametrize("rel", URDFS)
def test_forward_kinematics_matches_mujoco(rel: str) -> None:
    model = load_urdf(urdf_path(rel))
    kin = Kinematics(model)
    mj_model = mujoco.MjModel.from_xml_path(str(urdf_path(rel)))
    mj_data = mujoco.MjData(mj_model)
    mj_joints = {mj_model.joint(i).name for i in range(mj_model.njnt)}
    assert mj_joints == set(model.movable_joints)

    for q in random_configs(model, 25):
        for name, value in q.items():
            mj_data.qpos[mj_model.joint(name).qposadr[0]] = value
        mujoco.mj_kinematics(mj_model, mj_data)
        poses = kin.forward(q)
        assert set(poses) == set(model.links)
        for link, pose in poses.items():
            body = mj_model.body(link).id
            np.testing.assert_allclose(pose[:3, 3], mj_data.xpos[body], rtol=0, atol=1e-6)
            np.testing.assert_allclose(
                pose[:3, :3], mj_data.xmat[body].reshape(3, 3), rtol=0, atol=1e-6
            )
            np.testing.assert_allclose(kin.link_pose(q, link), pose, rtol=0, atol=1e-12)


def test_array_and_mapping_positions_agree() -> None:
    kin = Kinematics(load_urdf(urdf_path(URDFS[0])))
    q = random_configs(kin.model, 1, seed=3)[0]
    array = np.array([q[name] for name in kin.joint_names])
    expected = kin.link_pose(q, "tcp_link")
    np.testing.assert_array_equal(kin.link_pose(array, "tcp_link"), expected)
    chain_only = {name: q[name] for name in kin.model.movable_joints if "finger" not in name}
    np.testing.assert_array_equal(kin.link_pose(chain_only, "tcp_link"), expected)


def numeric_jacobian(kin: Kinematics, q: dict[str, float], link: str, joints, step=1e-6):
    columns = []
    for name in joints:
        plus, minus = dict(q), dict(q)
        plus[name] += step
        minus[name] -= step
        tp, tm = kin.link_pose(plus, link), kin.link_pose(minus, link)
        linear = (tp[:3, 3] - tm[:3, 3]) / (2 * step)
        r_dot = (tp[:3, :3] - tm[:3, :3]) / (2 * step)
        omega = r_dot @ kin.link_pose(q, link)[:3, :3].T
        columns.append(np.concatenate([linear, [omega[2, 1], omega[0, 2], omega[1, 0]]]))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize(
    ("rel", "link"),
    [
        (URDFS[0], "tcp_link"),
        (URDFS[0], "finger_right_link"),
        (URDFS[0], "wrist_camera_optical_frame"),
        (URDFS[1], "FL_foot_link"),
        (URDFS[1], "RR_calf_link"),
    ],
)
def test_jacobian_matches_finite_differences(rel: str, link: str) -> None:
    kin = Kinematics(load_urdf(urdf_path(rel)))
    joints = kin.joint_names
    for q in random_configs(kin.model, 5, seed=1):
        analytic = kin.jacobian(q, link, joints)
        assert analytic.shape == (6, len(joints))
        np.testing.assert_allclose(analytic, numeric_jacobian(kin, q, link, joints), atol=1e-7)


def test_jacobian_default_columns_are_the_chain() -> None:
    kin = Kinematics(load_urdf(urdf_path(URDFS[0])))
    q = random_configs(kin.model, 1)[0]
    chain = [j.name for j in kin.model.chain(kin.model.root_link, "finger_left_link") if j.movable]
    assert chain[-1] == "finger_left_joint"
    np.testing.assert_array_equal(
        kin.jacobian(q, "finger_left_link"), kin.jacobian(q, "finger_left_link", chain)
    )
    tcp = kin.jacobian(q, "tcp_link", ["finger_left_joint", "elbow"])
    assert not tcp[:, 0].any() and tcp[:, 1].any()


def test_joint_limits_match_urdf_numbers() -> None:
    arm = load_urdf(urdf_path(URDFS[0]))
    limits = arm.joint_limits(["elbow", "finger_left_joint", "finger_right_joint"])
    np.testing.assert_array_equal(limits.lower, [-2.6, 0.0, 0.0])
    np.testing.assert_array_equal(limits.upper, [2.6, 0.04, 0.04])
    np.testing.assert_array_equal(limits.velocity, [2.5, 0.1, 0.1])
    np.testing.assert_array_equal(limits.effort, [20.0, 20.0, 20.0])
    assert arm.joints["elbow"].damping == 0.3
    assert arm.joints["finger_right_joint"].axis == (0.0, -1.0, 0.0)
    assert arm.links["upper_arm_link"].mass == 1.5
    assert arm.links["upper_arm_link"].inertial_xyz == (0.0, 0.0, 0.15)
    assert arm.links["upper_arm_link"].inertia_matrix()[0, 0] == 0.0115625
    assert arm.root_link == "base_link"
    assert len(arm.movable_joints) == 8

    quad = load_urdf(urdf_path(URDFS[1]))
    calf = quad.joint_limits(["FL_calf_joint"])
    calf_row = (calf.lower[0], calf.upper[0], calf.velocity[0], calf.effort[0])
    assert calf_row == (-2.7, -0.9, 20.1, 35.5)
    assert len(quad.movable_joints) == 12
    with pytest.raises(ValueError):
        calf.lower[0] = 0.0  # read-only table


def test_chain_and_queries_reject_unknown_names() -> None:
    arm = load_urdf(urdf_path(URDFS[0]))
    kin = Kinematics(arm)
    names = [j.name for j in arm.chain("upper_arm_link", "tcp_link")]
    assert names == [
        "elbow",
        "wrist_roll",
        "wrist_pitch",
        "flange_roll",
        "gripper_mount",
        "tcp_joint",
    ]
    assert arm.chain("tcp_link", "tcp_link") == ()
    with pytest.raises(KinematicsError, match="not an ancestor"):
        arm.chain("tcp_link", "base_link")
    with pytest.raises(KinematicsError, match="no link 'hand'"):
        kin.link_pose(np.zeros(8), "hand")
    with pytest.raises(KinematicsError, match="expected 8 joint positions"):
        kin.forward(np.zeros(6))
    with pytest.raises(KinematicsError, match="elbw"):
        kin.forward({"elbw": 0.0})
    with pytest.raises(KinematicsError, match="no position for joint"):
        kin.link_pose({"elbow": 0.0}, "tcp_link")
    with pytest.raises(KinematicsError, match="non-finite"):
        kin.forward(np.full(8, np.nan))
    with pytest.raises(KinematicsError, match="gripper_mount"):
        kin.jacobian(np.zeros(8), "tcp_link", ["gripper_mount"])
    with pytest.raises(KinematicsError, match="tcp_joint"):
        arm.joint_limits(["tcp_joint"])


# --- bad URDF input -------------------------------------------------------------------------

LINKS = '<link name="a"/><link name="b"/>'


def urdf(body: str) -> str:
    return f'<?xml version="1.0"?><robot name="t">{body}</robot>'


def joint(extra: str, jtype: str = "revolute", parent: str = "a", child: str = "b") -> str:
    return (
        f'<joint name="j1" type="{jtype}"><parent link="{parent}"/><child link="{child}"/>'
        f"{extra}</joint>"
    )


GOOD_LIMIT = '<limit lower="-1" upper="1" velocity="2" effort="3"/>'


def test_minimal_urdf_string_parses() -> None:
    model = parse_urdf(urdf(LINKS + joint('<axis xyz="0 0 2"/>' + GOOD_LIMIT)))
    assert model.joints["j1"].axis == (0.0, 0.0, 1.0)
    assert model.source == "<string>"
    cont = parse_urdf(urdf(LINKS + joint('<limit velocity="2" effort="3"/>', "continuous")))
    limits = cont.joint_limits()
    assert limits.lower[0] == -np.inf and limits.upper[0] == np.inf and limits.velocity[0] == 2.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (LINKS + joint(""), r"joint 'j1' \(revolute\) has no <limit>"),
        (LINKS + joint('<limit lower="-1" upper="1" effort="3"/>'), "joint 'j1'.*'velocity'"),
        (LINKS + joint('<limit velocity="2" effort="3"/>', "prismatic"), "joint 'j1'.*'lower'"),
        (LINKS + joint("", "continuous"), r"joint 'j1' \(continuous\) has no <limit>"),
        (LINKS + joint('<limit lower="1" upper="-1" velocity="2" effort="3"/>'), "1.0 > upper"),
        (LINKS + joint('<limit lower="-1" upper="1" velocity="0" effort="3"/>'), "velocity > 0"),
        (LINKS + joint(GOOD_LIMIT, parent="nowhere"), "j1': parent link 'nowhere' is not defined"),
        (LINKS + joint(GOOD_LIMIT, child="ghost"), "joint 'j1': child link 'ghost' is not defined"),
        (LINKS + joint('<origin xyz="0 0 abc"/>' + GOOD_LIMIT), "joint 'j1'.*xyz=\"0 0 abc\""),
        (LINKS + joint('<origin xyz="0 0"/>' + GOOD_LIMIT), "must be 3 finite number"),
        (LINKS + joint('<axis xyz="0 0 0"/>' + GOOD_LIMIT), "joint 'j1'.*zero vector"),
        (LINKS + joint(GOOD_LIMIT, "floating"), "unsupported type 'floating'"),
        (LINKS + joint(GOOD_LIMIT, parent="b"), "a cycle"),
        (LINKS + '<link name="c"/>' + joint(GOOD_LIMIT), r"multiple root links \['a', 'c'\]"),
        (
            '<link name="r"/>'
            + LINKS
            + joint("", "fixed")
            + '<joint name="j2" type="fixed"><parent link="b"/><child link="a"/></joint>',
            r"joints \['j1', 'j2'\] form a cycle",
        ),
        (LINKS + LINKS, "link 'a' is defined twice"),
        ('<link name="a"><inertial><mass value="-1"/></inertial></link>', "'a': negative mass"),
        ('<link name="a"><inertial><mass value="1"/></inertial></link>', "link 'a'.*no <inertia>"),
        ("", "has no <link>"),
    ],
)
def test_bad_urdf_raises_clear_error(body: str, message: str) -> None:
    with pytest.raises(UrdfError, match=message) as info:
        parse_urdf(urdf(body), source="bad.urdf")
    assert str(info.value).startswith("bad.urdf: ")


def test_malformed_xml_and_missing_file() -> None:
    with pytest.raises(UrdfError, match=r"bad.urdf: malformed XML"):
        parse_urdf('<robot name="t"><link name="a"></robot>', source="bad.urdf")
    with pytest.raises(UrdfError, match="root element is <robt>"):
        parse_urdf('<robt name="t"/>')
    with pytest.raises(UrdfError, match=r"nonexistent\.urdf: cannot read URDF file"):
        load_urdf("/definitely/nonexistent.urdf")


# --- profiles --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["arm", "quadruped"])
def test_profiles_load_and_round_trip(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    assert profile.name == name and profile.kind == name
    assert load_profile(data_root() / "config" / "robots" / f"{name}.yaml") == profile
    assert parse_profile(profile.to_yaml()) == profile
    path = tmp_path / "copy.yaml"
    path.write_text(profile.to_yaml())
    reloaded = load_profile(path)
    assert reloaded == profile and reloaded.to_dict() == profile.to_dict()


def test_arm_profile_contents() -> None:
    profile = load_profile("arm")
    model = profile.load_model()
    action = profile.action
    assert action.kind == "joint_position" and len(action.names) == 7
    assert action.names[:6] == profile.arm_joints and action.names[6] in profile.gripper_joints
    limits = model.joint_limits(action.names)
    np.testing.assert_array_equal(action.low, limits.lower)
    np.testing.assert_array_equal(action.high, limits.upper)
    assert (action.low[6], action.high[6]) == (0.0, 0.04)
    assert profile.state.names == action.names
    assert profile.controllers["trajectory"].topic == "/arm_controller/joint_trajectory"
    assert profile.controllers["forward"].topic == "/forward_position_controller/commands"
    assert (profile.control_rate_hz, profile.policy_rate_hz) == (50.0, 10.0)
    assert profile.cameras[0].topic == "/camera/camera/color/image_raw"
    # the zero pose (arm straight up) puts the TCP above the table-top box, a forward reach inside
    kin = Kinematics(model)
    box_low, box_high = np.array(profile.workspace.low), np.array(profile.workspace.high)
    up = kin.link_pose(np.zeros(8), profile.tool_link)[:3, 3]
    assert not np.all((box_low <= up) & (up <= box_high))
    reach = dict(zip(kin.joint_names, [0.0, 0.9, 1.2, 0.0, 1.0, 0.0, 0.0, 0.0], strict=True))
    tcp = kin.link_pose(reach, profile.tool_link)[:3, 3]
    assert np.all((box_low <= tcp) & (tcp <= box_high)), tcp


def test_quadruped_profile_contents() -> None:
    profile = load_profile("quadruped")
    assert profile.action.kind == "body_velocity"
    assert profile.action.names == ("vx", "vy", "wz")
    np.testing.assert_array_equal(profile.action.low, [-0.6, -0.3, -1.0])
    np.testing.assert_array_equal(profile.action.high, [0.6, 0.3, 1.0])
    assert profile.state.names == ("x", "y", "yaw", "vx", "vy", "wz")
    assert profile.controllers["base"].stamped and profile.controllers["base"].topic == "/cmd_vel"
    assert set(profile.leg_joints) == set(profile.load_model().movable_joints)


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "bad_profile.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


DELETE = object()


def edit(data: dict, dotted: str, value: object) -> None:
    """Set (or DELETE) the entry at a dotted path such as ``cameras.0.frame``."""
    *parents, key = dotted.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    index = int(key) if isinstance(node, list) else key
    if value is DELETE:
        del node[index]
    else:
        node[index] = value


BAD_PROFILE_EDITS = [
    ("colour", "red", r"top level: unknown key\(s\) \['colour'\]"),
    ("action.scale", 2, r"action: unknown key\(s\) \['scale'\]"),
    ("policy_rate_hz", DELETE, "policy_rate_hz: required field is missing"),
    ("action.low", DELETE, "action.low: required field is missing"),
    ("action.names.2", "elbw", r"action.names\[2\]: 'elbw' is not a movable joint of URDF"),
    ("action.high.6", DELETE, "action.high: has 6 values for 7 action names"),
    ("action.low.2", -3.0, "exceeds the URDF limits .* of joint 'elbow'"),
    ("control_rate_hz", "fast", "control_rate_hz: expected float, got 'fast'"),
    ("cameras.0.width", True, r"cameras\[0\].width: expected int, got True"),
    ("kind", "humanoid", "kind: 'humanoid' is not one of"),
    ("action.kind", "body_velocity", "action.kind: 'body_velocity' is not one of"),
    ("urdf", "urdf/missing.urdf", r"urdf: .*missing\.urdf: cannot read URDF"),
    ("tool_link", "hand", "tool_link: 'hand' is not a link"),
    ("cameras.0.frame", "eye", r"cameras\[0\].frame: 'eye' is not a link"),
    ("topics.e_stop", "e_stop", "topics.e_stop: topic 'e_stop' must be absolute"),
    ("controllers.gripper", DELETE, r"no controller commands joint\(s\) \['finger_left_joint'"),
    ("policy_rate_hz", 100.0, "policy_rate_hz: 100.0 exceeds control_rate_hz"),
    ("workspace.low", [0.0, 0.0], "workspace.low: must have 3 values"),
    ("workspace", None, "workspace: required for kind 'arm'"),
    ("leg_joints", ["elbow"], "leg_joints: not allowed for kind 'arm'"),
]


@pytest.mark.parametrize(("dotted", "value", "message"), BAD_PROFILE_EDITS)
def test_bad_profile_raises_clear_error(
    tmp_path: Path, dotted: str, value: object, message: str
) -> None:
    data = load_profile("arm").to_dict()
    edit(data, dotted, value)
    path = write(tmp_path, data)
    with pytest.raises(ProfileError, match=message) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{path}: ")


def test_bad_profile_files_and_names(tmp_path: Path) -> None:
    known = r"no robot profile 'humanoid' \(known: \[.*'arm'.*'quadruped'"
    with pytest.raises(ProfileError, match=known):
        load_profile("humanoid")
    with pytest.raises(ProfileError, match="cannot read robot profile"):
        load_profile(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ProfileError, match="invalid YAML"):
        load_profile(broken)
    broken.write_text("- just\n- a list\n")
    with pytest.raises(ProfileError, match="top level: expected a mapping"):
        load_profile(broken)
    quad = load_profile("quadruped").to_dict()
    quad["action"]["names"] = ["vx", "vy", "yaw_rate"]
    with pytest.raises(ProfileError, match=r"action.names\[2\]: 'yaw_rate' is not one of"):
        load_profile(write(tmp_path, quad))
