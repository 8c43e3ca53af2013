"""The one bringup plan: `launch/robot.launch.py` and `wm-vla up` build the same node set, params and remappings."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from types import ModuleType

import pytest

from script_helpers import load_script
from wm_vla.bringup import BringupArgs, NodeSpec, bringup_args, build_plan, params_yaml, ros_args
from wm_vla.cli import main
from wm_vla.launcher import Stack
from wm_vla.robots.errors import ProfileError

REPO = Path(__file__).resolve().parents[1]


def launch_module() -> ModuleType:
    return load_script("launch/robot.launch.py", "robot_launch")  # importable without launch_ros (needed for actions)


def cli_plan(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["up", *argv, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("launch_args", "cli_args"), [
    ({}, []),
    ({"robot": "arm", "backend": "onnxruntime", "k": "8"}, ["--robot", "arm", "--backend", "onnxruntime", "--k", "8"]),
    ({"robot": "sim", "command_interface": "joint_trajectory"}, ["--command-interface", "joint_trajectory"]),
    ({"robot": "sim", "denoise_steps": "5"}, ["--denoise-steps", "5"]),
    ({"robot": "sim", "inference_cpus": "off"}, ["--inference-cpus", "off"]),
    ({"robot": "quadruped", "use_sim_time": "true", "rank": "false"},
     ["--robot", "quadruped", "--use-sim-time", "--no-rank"]),
])
def test_launch_file_and_wm_vla_up_consume_the_same_plan(launch_args: dict[str, str], cli_args: list[str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from_launch = [n.to_dict() for n in launch_module().plan_for(launch_args)]
    assert from_launch == cli_plan(cli_args, capsys)


def test_sim_plan_has_the_full_stack_with_sim_cameras_and_the_urdf() -> None:
    plan = {n.name: n for n in build_plan(BringupArgs(robot="sim"))}
    assert set(plan) == {"sim_robot", "perception_node", "vla_node", "world_model_node", "robot_state_publisher"}
    assert plan["perception_node"].parameters["camera_topics"] == ["/camera/front/color/image_raw",
                                                                  "/camera/wrist/color/image_raw"]
    assert plan["vla_node"].lifecycle and plan["world_model_node"].lifecycle
    assert "<robot" in plan["robot_state_publisher"].parameters["robot_description"]
    assert plan["robot_state_publisher"].external and not plan["vla_node"].external
    real = {n.name for n in build_plan(BringupArgs(robot="arm"))}
    assert "sim_robot" not in real  # a real robot brings its own drivers and controllers


def test_vla_node_gets_its_own_cpu_and_the_other_nodes_the_rest(tmp_path: Path) -> None:
    import os

    from wm_vla.cpus import parse_cpu_list, usable_cpus

    plan = {n.name: n for n in build_plan(BringupArgs(robot="sim"))}
    allowed = sorted(os.sched_getaffinity(0))
    assert "cpu_affinity" not in plan["robot_state_publisher"].parameters  # not ours to pin
    if usable_cpus() >= 2:
        mine = parse_cpu_list(plan["vla_node"].parameters["cpu_affinity"])
        assert mine == (allowed[usable_cpus() - 1],)
        for name in ("sim_robot", "perception_node", "world_model_node"):
            assert set(parse_cpu_list(plan[name].parameters["cpu_affinity"])) == set(allowed) - set(mine), name
    off = {n.name: n for n in build_plan(BringupArgs(robot="sim", inference_cpus="off"))}
    assert all("cpu_affinity" not in n.parameters for n in off.values())
    params = tmp_path / "p.yaml"  # a params file still decides per node
    params.write_text("world_model_node:\n  ros__parameters:\n    cpu_affinity: ''\n")
    custom = {n.name: n for n in build_plan(BringupArgs(robot="sim", params_file=str(params)))}
    assert custom["world_model_node"].parameters["cpu_affinity"] == ""
    teleop_only = build_plan(BringupArgs(robot="sim", teleop="keyboard", record=str(tmp_path / "rec")))
    assert all("cpu_affinity" not in n.parameters for n in teleop_only)  # no policy process to isolate


def test_params_file_overrides_and_ros_args(tmp_path: Path) -> None:
    params = tmp_path / "p.yaml"
    params.write_text("vla_node:\n  ros__parameters:\n    k: 4\n    threads: 2\n")
    plan = {n.name: n for n in build_plan(BringupArgs(robot="sim", params_file=str(params)))}
    assert plan["vla_node"].parameters["k"] == 4 and plan["vla_node"].parameters["threads"] == 2
    args = ros_args(plan["vla_node"], tmp_path / "vla.yaml")
    assert args[:3] == ["--ros-args", "-r", "__node:=vla_node"] and "--params-file" in args
    assert "ros__parameters" in params_yaml(plan["vla_node"])


@pytest.mark.parametrize(("text", "message"), [
    ("nope_node:\n  ros__parameters: {k: 1}\n", "unknown"),
    ("vla_node: [1, 2]\n", "ros__parameters"),
    ("vla_node: {ros__parameters: {k: 1}\n", "cannot read"),
])
def test_bad_params_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    params = tmp_path / "p.yaml"
    params.write_text(text)
    with pytest.raises(ProfileError, match=message):
        build_plan(BringupArgs(robot="sim", params_file=str(params)))


@pytest.mark.parametrize(("values", "message"), [
    ({"robot": "humanoid"}, "unknown robot"),
    ({"use_sim_time": "maybe"}, "true or false"),
    ({"colour": "red"}, "unknown bringup argument"),
    ({"denoise_steps": "-2"}, "denoise_steps must be >= 1"),
    ({"k": "many"}, "k must be an integer, got 'many'"),
    ({"rate_scale": "fast"}, "rate_scale must be a number"),
    ({"inference_cpus": "first"}, "inference_cpus: CPU list 'first'"),
    ({"inference_cpus": "4096"}, "not available to this process"),
])
def test_bad_bringup_arguments_are_clear_errors(values: dict[str, str], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        build_plan(bringup_args(values))


def test_wm_vla_up_reports_a_bad_robot(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--robot", "humanoid", "--dry-run"]) == 2
    assert "unknown robot" in capsys.readouterr().err


def test_bringup_launcher_demo_and_command_path_stay_ros_free() -> None:
    import subprocess
    import sys

    code = ("import sys, wm_vla.bringup, wm_vla.launcher, wm_vla.eval.ros_demo, wm_vla.runtime.safety, "
            "wm_vla.runtime.executor, wm_vla.runtime.loading, wm_vla.data.sync, wm_vla.data.images; "
            "assert 'rclpy' not in sys.modules, 'rclpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def teleop_launch_module() -> ModuleType:
    return load_script("launch/teleop_record.launch.py", "teleop_launch")


def test_teleop_record_launch_and_wm_vla_up_build_the_same_plan(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    rec = str(tmp_path / "demos")
    from_launch = [n.to_dict() for n in teleop_launch_module().plan_for({"teleop": "keyboard", "record": rec})]
    assert from_launch == cli_plan(["--teleop", "keyboard", "--record", rec], capsys)
    plan = {n["name"]: n for n in from_launch}
    assert set(plan) == {"sim_robot", "teleop_node", "recorder_node", "robot_state_publisher"}  # no policy nodes
    assert plan["recorder_node"]["parameters"]["camera_topics"] == ["/camera/front/color/image_raw",
                                                                   "/camera/wrist/color/image_raw"]
    assert plan["recorder_node"]["parameters"]["status_topic"] == "/sim/status"
    mux = {n.name: n for n in build_plan(BringupArgs(robot="sim", teleop="joy", record=rec, intervene=True))}
    assert mux["teleop_node"].parameters["policy_prefix"] == "/wm_vla/policy"
    assert ("/forward_position_controller/commands", "/wm_vla/policy/forward_position_controller/commands") in \
        mux["world_model_node"].remappings  # the policy's commands reach the robot only through the mux
    with pytest.raises(ProfileError, match="teleop input"):
        build_plan(BringupArgs(robot="sim", teleop="mouse"))
    fast_launch = teleop_launch_module().plan_for({"teleop": "joy", "record": rec, "teleop_max_linear": "0.25"})
    assert [n.to_dict() for n in fast_launch] == cli_plan(["--teleop", "joy", "--record", rec,
                                                           "--teleop-max-linear", "0.25"], capsys)
    assert {n.name: n for n in fast_launch}["teleop_node"].parameters["max_linear"] == 0.25
    for bad in (0.0, -0.1, float("nan"), 5.0):
        with pytest.raises(ProfileError, match="teleop_max_linear"):
            build_plan(BringupArgs(robot="sim", teleop="joy", teleop_max_linear=bad))


STUBBORN = """
import signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a node stuck in its shutdown
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def test_stack_stop_escalates_and_notes_it_in_the_nodes_log(tmp_path: Path) -> None:
    """A node that does not exit on SIGINT gets SIGTERM, then SIGKILL; each step is noted at the end of its log, so a
    bag left without its footer has a reason next to it."""
    (tmp_path / "stubborn_node.py").write_text(STUBBORN)
    spec = NodeSpec("stubborn", "stubborn", "stubborn_node")
    with Stack([spec], log_dir=tmp_path / "logs", env={"PYTHONPATH": str(tmp_path)}) as stack:
        deadline = time.monotonic() + 60
        while "ready" not in stack.log("stubborn") and time.monotonic() < deadline:
            assert stack.procs["stubborn"].poll() is None, stack.log("stubborn")
            time.sleep(0.05)
        stack.stop(timeout=0.5)
        assert stack.procs["stubborn"].returncode == -signal.SIGKILL
        notes = [line for line in stack.log("stubborn").splitlines() if line.startswith("[wm_vla.launcher]")]
    assert notes == ["[wm_vla.launcher] stubborn: still running 0.5 s after SIGINT: SIGTERM",
                     "[wm_vla.launcher] stubborn: still running 3 s after SIGTERM: SIGKILL (no shutdown handlers ran)"]
