"""`wm-vla bag play`: the schedule (rate, loop, start offset, remap) and a real replay over rclpy / Fast DDS into a
subscriber in this process: rate within +-10% at 30 Hz, field-exact messages (incl. our own), /clock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from wm_vla.data.bags import BagRecorder, RecorderConfig
from wm_vla.data.bags import messages as m
from wm_vla.data.bags.play import PlayConfig, parse_remaps, play_schedule
from wm_vla.data.errors import BagOpenError, BagTopicError

REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
T0 = 1_700_000_000 * NS
HZ = 30
N = 60   # 2 s at 30 Hz


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    with BagRecorder(RecorderConfig(tmp_path_factory.mktemp("play") / "b")) as rec:
        rec.write("/instruction", "std_msgs/msg/String", m.string("touch the red cube"), T0)
        for i in range(N):
            t = T0 + i * NS // HZ
            rec.write("/joint_states", "sensor_msgs/msg/JointState",
                      m.joint_state(["a", "b"], rng.standard_normal(2), t, rng.standard_normal(2)), t + 1000)
            rec.write("/camera/camera/color/image_raw", "sensor_msgs/msg/Image",
                      m.image(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), t, "cam"), t + 2000)
            if i % 6 == 0:
                acts = rng.standard_normal((2, 3, 4)).astype(np.float32)
                acts[0, 0, 0] = -0.0
                rec.write("/wm_vla/action_candidates", "wm_vla_interfaces/msg/ActionCandidates",
                          m.action_candidates(acts, rng.standard_normal(5), rng.standard_normal((2, 1, 5)),
                                              list("wxyz"), 2**64 - 1 - i, "touch the red cube", t), t + 3000)
    return rec.parts[0]


def test_schedule_rate_offset_loop_and_remap(bag: Path) -> None:
    items = list(play_schedule(PlayConfig(bag, rate=2.0, remap={"/joint_states": "/js"})))
    assert len(items) == 1 + 2 * N + 10
    js = [i for i in items if i.topic == "/js"]
    assert len(js) == N and js[0].due_s == pytest.approx(1000 / NS / 2)
    assert js[-1].due_s - js[0].due_s == pytest.approx((N - 1) / HZ / 2, abs=1e-6)   # twice as fast
    later = list(play_schedule(PlayConfig(bag, start_offset_s=1.0, topics=("/joint_states",))))
    assert len(later) == N - HZ and later[0].due_s < 1e-3 and {i.topic for i in later} == {"/joint_states"}
    looped = play_schedule(PlayConfig(bag, loop=True, topics=("/joint_states",)))
    first_two = [next(looped) for _ in range(2 * N)]
    assert first_two[N].data == first_two[0].data and first_two[N].due_s > first_two[N - 1].due_s
    with pytest.raises(BagTopicError, match="rate must be > 0"):
        list(play_schedule(PlayConfig(bag, rate=0)))
    with pytest.raises(BagTopicError, match="no topic"):
        list(play_schedule(PlayConfig(bag, topics=("/nope",))))
    with pytest.raises(BagTopicError, match="/from:=/to"):
        parse_remaps(["joint_states:=/x"])
    with pytest.raises(BagOpenError):
        list(play_schedule(PlayConfig(bag.parent / "missing")))


def test_schedule_plays_a_recorder_session_across_its_parts(tmp_path: Path) -> None:
    """recorder_node's raw bag is a directory of parts (one closed at each episode end), the last one possibly cut
    off by a kill: play merges them in time, the cut-off part up to its last complete record."""
    with BagRecorder(RecorderConfig(tmp_path / "session")) as rec:
        for i in range(30):
            t = T0 + i * NS // HZ
            rec.write("/joint_states", "sensor_msgs/msg/JointState", m.joint_state(["a"], np.array([float(i)]), t), t)
            if i in (9, 19):
                rec.close()  # episode ends
    assert len(rec.parts) == 3
    (rec.parts[-1] / "metadata.yaml").unlink()  # killed: no metadata.yaml, the mcap without its summary
    items = list(play_schedule(PlayConfig(tmp_path / "session", rate=2.0)))
    assert [i.log_ns for i in items] == [T0 + i * NS // HZ for i in range(30)]
    assert items[-1].due_s == pytest.approx(29 / HZ / 2)


@pytest.mark.ros
def test_play_publishes_at_rate_and_field_exact(bag: Path, ros_domain: int, tmp_path: Path) -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from wm_vla_interfaces.msg import ActionCandidates

    from wm_vla.data.bags import BagReader

    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bag_play_test", context=ctx)
    got: dict[str, list[tuple[float, object]]] = {}
    qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    for topic, cls in (("/replay/joint_states", JointState), ("/camera/camera/color/image_raw", Image),
                       ("/wm_vla/action_candidates", ActionCandidates), ("/instruction", String), ("/clock", Clock)):
        got[topic] = []
        node.create_subscription(cls, topic, lambda msg, t=topic: got[t].append((time.monotonic(), msg)), qos)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [ex.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)])
    spinner.start()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "player.log"
    try:
        with log.open("wb") as out:
            proc = subprocess.run([sys.executable, "-m", "wm_vla.cli", "bag", "play", str(bag), "--remap",
                                   "/joint_states:=/replay/joint_states", "--clock", "50", "--wait-for-subscribers",
                                   "20"], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=60)
        deadline = time.monotonic() + 5
        while len(got["/replay/joint_states"]) < N and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        spinner.join()
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    assert proc.returncode == 0, log.read_text()
    assert f"published {1 + 2 * N + 10} messages" in log.read_text()
    js = got["/replay/joint_states"]
    assert len(js) == N and len(got["/camera/camera/color/image_raw"]) == N
    rate = (N - 1) / (js[-1][0] - js[0][0])
    assert abs(rate - HZ) / HZ < 0.10, f"received at {rate:.2f} Hz, requested {HZ} Hz"
    with BagReader(bag) as reader:
        want = {t: reader.read(t) for t in ("/joint_states", "/camera/camera/color/image_raw",
                                            "/wm_vla/action_candidates")}
    for (_, msg), rec in zip(js, want["/joint_states"]):
        assert list(msg.name) == rec.msg.name and msg.header.stamp.nanosec == rec.msg.header.stamp.nanosec
        assert np.array_equal(np.array(msg.position), rec.msg.position)
        assert np.array_equal(np.array(msg.velocity), rec.msg.velocity)
    for (_, msg), rec in zip(got["/camera/camera/color/image_raw"], want["/camera/camera/color/image_raw"]):
        assert (msg.encoding, msg.width, msg.height, msg.step, msg.header.frame_id) == \
            (rec.msg.encoding, rec.msg.width, rec.msg.height, rec.msg.step, rec.msg.header.frame_id)
        assert bytes(msg.data) == rec.msg.data.tobytes()
    cands = got["/wm_vla/action_candidates"]
    assert len(cands) == 10
    for (_, msg), rec in zip(cands, want["/wm_vla/action_candidates"]):
        assert msg.seed == rec.msg.seed and msg.instruction == rec.msg.instruction
        assert np.array(msg.actions, np.float32).tobytes() == rec.msg.actions.tobytes()   # bit-exact, -0.0 kept
        assert np.array(msg.future_latents, np.float32).tobytes() == rec.msg.future_latents.tobytes()
    assert [msg.data for _, msg in got["/instruction"]] == ["touch the red cube"]
    clock = [msg.clock.sec * NS + msg.clock.nanosec for _, msg in got["/clock"]]
    assert len(clock) >= 50 and clock == sorted(clock) and T0 <= clock[0] and clock[-1] <= T0 + 2 * NS + 10**7


def test_play_and_sim_command_lines(bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wm_vla.cli import main
    from wm_vla.data.bags import BagReader

    assert main(["bag", "play", str(tmp_path / "missing")]) == 2
    assert "no such bag" in capsys.readouterr().err
    (tmp_path / "not_a_bag").mkdir()
    (tmp_path / "not_a_bag" / "notes.txt").write_text("x")
    assert main(["bag", "play", str(tmp_path / "not_a_bag")]) == 2
    assert "cannot open as a ROS 2 bag" in capsys.readouterr().err
    import rclpy
    from bag_player.node import main as play

    with pytest.raises(BagOpenError, match="cannot open as a ROS 2 bag"):
        play(PlayConfig(tmp_path / "not_a_bag"))
    assert not rclpy.ok()  # the player's ROS context went with it
    assert main(["bag", "play", str(bag), "--rate", "0"]) == 2
    assert "rate must be > 0" in capsys.readouterr().err
    assert main(["bag", "play", str(bag), "--remap", "joint_states:=/x"]) == 2
    assert "/from:=/to" in capsys.readouterr().err
    assert main(["bag", "sim", "--out", str(tmp_path / "sim"), "--episodes", "1", "--image-size", "32",
                 "--no-progress"]) == 0
    assert "1 episodes" in capsys.readouterr().out
    with BagReader(tmp_path / "sim" / "sim_0000") as reader:
        assert reader.topics["/camera/camera/color/image_raw"] == "sensor_msgs/msg/Image"
        assert reader.topics["/arm_controller/joint_trajectory"] == "trajectory_msgs/msg/JointTrajectory"
        img = reader.read("/camera/front/color/image_raw")[0].msg
    assert (img.encoding, img.width, img.height) == ("bgr8", 32, 32)


def test_bag_recorder_topics_default_to_the_stack_and_bad_entries_are_refused() -> None:
    from bag_player.record import default_topics, parse_topics
    from wm_vla.data.errors import BagWriteError
    from wm_vla.robots import load_profile

    arm = default_topics(load_profile("arm"), sim=True)
    assert arm["/camera/wrist/color/image_raw"] == "sensor_msgs/msg/Image"
    assert arm["/wm_vla/action_candidates"] == "wm_vla_interfaces/msg/ActionCandidates"
    assert arm["/forward_position_controller/commands"] == "std_msgs/msg/Float64MultiArray"
    quad = default_topics(load_profile("quadruped"), sim=False)
    assert "/joint_states" not in quad and any(t.endswith("Twist") or t.endswith("TwistStamped") for t in quad.values())
    assert parse_topics(["/a", "/b:std_msgs/msg/String"]) == {"/a": None, "/b": "std_msgs/msg/String"}
    for bad in ("no_slash", "/x:String", "/x:std_msgs/String"):
        with pytest.raises(BagWriteError, match="expected"):
            parse_topics([bad])
