"""wm_vla.data.bags: reader (mcap / sqlite3, bad bags), images, as-of alignment, episodes, command tracks,
decision points from a real sim bag, and the BagRecorder (splitting)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from bag_helpers import sim_bag
from wm_vla.data.bags import (BagReader, BagRecorder, CommandSource, LoadConfig, RecorderConfig, TopicMap,
                              asof_indices, by_gaps, by_markers, by_ranges, image_to_rgb, load_decisions,
                              parse_overrides, parse_ranges)
from wm_vla.data.bags import messages as m
from wm_vla.data.bags.commands import CommandTrack, command_chunks
from wm_vla.data.bags.reader import Record
from wm_vla.data.bags.typestore import bag_typestore
from wm_vla.data.errors import (BagAlignmentError, BagMessageError, BagOpenError, BagTopicError, BagWriteError,
                                EpisodeSpecError)
from wm_vla.robots import load_profile

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
ARM = load_profile("arm")


@pytest.fixture(scope="module")
def simbag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return sim_bag(tmp_path_factory.mktemp("simbag"), episodes=2)


def _load_cfg(**kw: object) -> LoadConfig:
    base = dict(cameras=("front", "wrist"), image_size=64, state_names=tuple(ARM.state.names),
                action_names=tuple(ARM.action.names), horizon=8, fps=10.0, every_s=0.4, max_age_ms=200.0, gap_s=1.0)
    return LoadConfig(**{**base, **kw})  # type: ignore[arg-type]


def _topics() -> TopicMap:
    return TopicMap.from_profile(ARM, ("front", "wrist"))


# ----- as-of alignment and episodes -----
def test_asof_never_uses_a_future_message_and_bounds_the_age() -> None:
    stamps = np.array([100, 200, 300])
    got = asof_indices(stamps, np.array([50, 100, 199, 250, 300, 399, 401]), max_age_ns=100)
    assert got.tolist() == [-1, 0, 0, 1, 2, 2, -1]   # 401 - 300 > 100: too old
    with pytest.raises(BagAlignmentError, match="sorted"):
        asof_indices(np.array([2, 1]), np.array([3]), 10)
    with pytest.raises(BagAlignmentError, match=">= 0"):
        asof_indices(stamps, stamps, -1)


def test_episodes_by_ranges_gaps_and_markers() -> None:
    assert parse_ranges("0:1.5, 2:3") == [(0.0, 1.5), (2.0, 3.0)]
    for bad in ("", "1", "a:b", "3:2", "-1:2"):
        with pytest.raises(EpisodeSpecError):
            parse_ranges(bad)
    with pytest.raises(EpisodeSpecError, match="overlap"):
        by_ranges([(0, 2), (1, 3)], 0)
    eps = by_ranges([(0, 1), (2, 3)], T0)
    assert [(e.start_ns - T0, e.end_ns - T0) for e in eps] == [(0, NS), (2 * NS, 3 * NS)]
    gaps = by_gaps(np.array([0, 1, 2, 10, 11]) * NS // 10, gap_s=0.5)
    assert [(e.start_ns, e.end_ns) for e in gaps] == [(0, 3 * NS // 10), (NS, 12 * NS // 10)]
    with pytest.raises(EpisodeSpecError):
        by_gaps(np.array([0]), 0)
    marks = by_markers([(10, False), (20, True), (30, False), (40, False)], bag_end_ns=50)
    assert [(e.start_ns, e.end_ns) for e in marks] == [(10, 20), (30, 40), (40, 51)]


# ----- images -----
def test_image_decoding_rgb_bgr_mono_with_row_padding_and_compressed() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    for enc in ("rgb8", "bgr8"):
        msg = m.image(rgb, 1, encoding=enc)
        np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    padded = m.image(rgb, 1, encoding="bgr8")
    rows = padded.data.reshape(5, 21)
    padded.data, padded.step = np.concatenate([rows, np.zeros((5, 3), np.uint8)], axis=1).reshape(-1), 24
    np.testing.assert_array_equal(image_to_rgb(padded), rgb)
    mono = image_to_rgb(m.image(rgb, 1, encoding="mono8"))
    assert mono.shape == (5, 7, 3) and (mono[..., 0] == mono[..., 2]).all()
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    comp = bag_typestore().types["sensor_msgs/msg/CompressedImage"](header=m.header(1), format="png",
                                                                       data=png.reshape(-1))
    np.testing.assert_array_equal(image_to_rgb(comp), rgb)


def test_bad_images_raise_clear_errors() -> None:
    msg = m.image(np.zeros((4, 4, 3), np.uint8), 1)
    msg.encoding = "16UC1"
    with pytest.raises(BagMessageError, match="unsupported image encoding '16UC1'"):
        image_to_rgb(msg)
    msg = m.image(np.zeros((4, 4, 3), np.uint8), 1)
    msg.data = msg.data[:10]
    with pytest.raises(BagMessageError, match="needs 48 bytes, has 10"):
        image_to_rgb(msg)
    comp = bag_typestore().types["sensor_msgs/msg/CompressedImage"](header=m.header(1), format="jpeg",
                                                                       data=np.arange(20, dtype=np.uint8))
    with pytest.raises(BagMessageError, match="cannot decode compressed image"):
        image_to_rgb(comp)


# ----- topics -----
def test_topic_map_defaults_from_the_profile_and_overrides() -> None:
    t = _topics()
    assert t.cameras == {"front": "/camera/front/color/image_raw", "wrist": "/camera/camera/color/image_raw"}
    assert t.joint_states == "/joint_states"
    assert [(c.topic, c.interface) for c in t.commands] == [("/arm_controller/joint_trajectory", "joint_trajectory"),
                                                            ("/gripper_controller/commands", "position_commands")]
    q = TopicMap.from_profile(load_profile("quadruped"), ("front",))
    assert [(c.topic, c.interface) for c in q.commands] == [("/cmd_vel", "twist")]
    o = t.with_overrides(parse_overrides(["front=/cam/a", "command=/jtc/traj", "joint_states=/js", "marker=/ep"]))
    assert (o.cameras["front"], o.commands[0].topic, o.joint_states, o.marker) == ("/cam/a", "/jtc/traj", "/js", "/ep")
    with pytest.raises(BagTopicError, match="unknown topic entry 'nope'"):
        t.with_overrides({"nope": "/x"})
    with pytest.raises(BagTopicError, match="absolute"):
        t.with_overrides({"front": "cam"})
    with pytest.raises(BagTopicError, match="NAME=/topic"):
        parse_overrides(["front"])
    with pytest.raises(BagTopicError, match="no command source"):
        t.with_overrides({"command.5": "/x"})


# ----- command tracks -----
def test_trajectory_interpolates_and_holds_and_arrays_hold_until_replaced() -> None:
    names = ("a", "b", "g")
    period = NS // 10
    traj = m.joint_trajectory(["a", "b"], np.array([[1.0, 10.0], [2.0, 20.0]]), period)
    track = CommandTrack(CommandSource("/t", "joint_trajectory", ("a", "b")), names, [Record(T0, T0, traj)], period)
    vals = track.values_at(np.array([T0 - 1, T0, T0 + period, T0 + period + period // 2, T0 + 5 * period]))
    assert np.isnan(vals[0]).all()                         # before the first command
    np.testing.assert_allclose(vals[1:, :2], [[1, 10], [1, 10], [1.5, 15], [2, 20]], rtol=1e-6)  # hold first/last point
    assert np.isnan(vals[:, 2]).all()
    grip = [Record(T0 + i * NS, T0 + i * NS, m.float64_array(np.array([v, v]))) for i, v in enumerate([0.01, 0.03])]
    gtrack = CommandTrack(CommandSource("/g", "position_commands", ("g", "g2")), names, grip, period)
    np.testing.assert_allclose(gtrack.values_at(np.array([T0, T0 + NS - 1, T0 + 10 * NS]))[:, 2], [0.01, 0.01, 0.03])
    chunks = command_chunks([track, gtrack], np.array([T0]), 3, 3, 10.0, ends_ns=np.array([T0 + period]))
    # action i of a decision at t = command in effect just before t + (i+1) periods; past the episode end: NaN
    np.testing.assert_allclose(chunks[0, 0], [1, 10, 0.01])
    assert np.isnan(chunks[0, 2]).all()
    bad = CommandTrack(CommandSource("/g", "position_commands", ("g",)), names, grip, period)
    with pytest.raises(BagMessageError, match="2 values for joints"):
        bad.values_at(np.array([T0]))
    with pytest.raises(BagMessageError, match="interface"):
        CommandTrack(CommandSource("/x", "effort", ()), names, [], period)


def test_twist_commands_time_out_to_zero() -> None:
    twist = bag_typestore().types["geometry_msgs/msg/Twist"]
    vec = bag_typestore().types["geometry_msgs/msg/Vector3"]
    msg = twist(linear=vec(x=0.5, y=0.1, z=0.0), angular=vec(x=0.0, y=0.0, z=-0.2))
    track = CommandTrack(CommandSource("/cmd_vel", "twist"), ("vx", "vy", "wz"), [Record(T0, T0, msg)], NS // 10)
    np.testing.assert_allclose(track.values_at(np.array([T0 + NS // 10, T0 + NS])), [[0.5, 0.1, -0.2], [0, 0, 0]])


# ----- reading: both storages, our messages, bad bags -----
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_recorder_roundtrip_and_split_by_size_and_duration(tmp_path: Path, storage: str) -> None:
    store = bag_typestore()
    cand = store.types["wm_vla_interfaces/msg/ActionCandidates"](
        header=m.header(T0, "base_link"), k=2, h=1, a=2, action_names=["x", "y"],
        actions=np.arange(4, dtype=np.float32), obs_latent=np.ones(3, np.float32), wm_latent=np.ones(2, np.float32),
        m=0, latent_dim=3,
        future_latents=np.zeros(0, np.float32), policy_scores=np.zeros(0, np.float32), seed=2**63 + 5,
        instruction="touch the red cube", policy_id="p")
    with BagRecorder(RecorderConfig(tmp_path / "b", storage=storage, split_duration_s=1.0, split_bytes=10_000)) as rec:
        for i in range(30):  # 3 s at 10 Hz: duration splits every second; images fill 10 kB even faster
            t = T0 + i * NS // 10
            rec.write("/c", "wm_vla_interfaces/msg/ActionCandidates", cand, t)
            if i < 10:
                rec.write("/img", "sensor_msgs/msg/Image", m.image(np.full((30, 40, 3), i, np.uint8), t), t)
    assert len(rec.parts) >= 4 and rec.messages == 40
    got, imgs = [], []
    for part in rec.parts:
        with BagReader(part) as r:
            got += r.read("/c") if "/c" in r.topics else []
            imgs += r.read("/img") if "/img" in r.topics else []
            assert not r.issues.counts
    assert len(got) == 30 and len(imgs) == 10
    assert got[0].msg.seed == 2**63 + 5 and got[0].msg.instruction == "touch the red cube"
    np.testing.assert_array_equal(got[0].msg.actions, np.arange(4))
    np.testing.assert_array_equal(got[0].msg.wm_latent, np.ones(2))  # the world model's latent survives the bag
    assert [int(image_to_rgb(r.msg)[0, 0, 0]) for r in imgs] == list(range(10))
    assert got[-1].log_ns == T0 + 29 * NS // 10 and got[-1].stamp_ns == T0   # header stamp first
    with BagReader(tmp_path / "b") as whole:  # the recording's directory: every part, merged in time
        merged = whole.read("/c")
        assert [r.log_ns for r in merged] == [r.log_ns for r in got] and len(whole.read("/img")) == 10


def test_recorder_rejects_bad_settings(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BagWriteError, match="not empty"):
        BagRecorder(RecorderConfig(tmp_path / "full"))
    with pytest.raises(BagWriteError, match="storage"):
        BagRecorder(RecorderConfig(tmp_path / "a", storage="bag"))
    with pytest.raises(BagWriteError, match="split_bytes"):
        BagRecorder(RecorderConfig(tmp_path / "a", split_bytes=0))
    with BagRecorder(RecorderConfig(tmp_path / "b")) as rec:
        with pytest.raises(BagWriteError, match="unknown message type"):
            rec.write("/x", "foo_msgs/msg/Bar", None, 0)
        rec.write("/s", "std_msgs/msg/String", m.string("a"), 1)
        with pytest.raises(BagWriteError, match="recorded as std_msgs/msg/String"):
            rec.write("/s", "std_msgs/msg/Bool", None, 2)


def _js_bag(path: Path, stamps: list[int]) -> Path:
    with BagRecorder(RecorderConfig(path)) as rec:
        for i, s in enumerate(stamps):
            rec.write("/joint_states", "sensor_msgs/msg/JointState", m.joint_state(["a"], np.array([float(i)]), s),
                      T0 + i)
    return rec.parts[0]


def test_truncated_mcap_keeps_complete_messages_and_counts_the_loss(tmp_path: Path) -> None:
    bag = _js_bag(tmp_path / "b", [T0 + i for i in range(400)])
    (mcap,) = bag.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with BagReader(bag) as r:
        recs = r.read("/joint_states")
        issues = r.issues.to_dict()
    assert 50 < len(recs) < 400
    assert [rec.msg.position[0] for rec in recs] == list(range(len(recs)))   # a clean prefix, in order
    assert issues["truncated"]["count"] == 1 and "dropped" in issues["truncated"]["example"]


KILLED_SESSION = r"""
import os, signal, sys
from pathlib import Path
import numpy as np
from wm_vla.data.bags import messages as m
from wm_vla.data.bags.writer import BagRecorder, RecorderConfig

T0, frames = 1_700_000_000 * 10**9, int(sys.argv[2])
rec = BagRecorder(RecorderConfig(Path(sys.argv[1])))
for i in range(frames):
    image = m.image(np.full((96, 96, 3), i % 256, np.uint8), T0 + i)
    rec.write("/camera", "sensor_msgs/msg/Image", image, T0 + i)
    if i in (99, 199):  # the ends of two episodes: recorder_node closes the part there
        rec.write("/wm_vla/episode", "std_msgs/msg/String", m.string("end"), T0 + i)
        rec.close()
os.kill(os.getpid(), signal.SIGKILL)  # mid-episode
"""


@pytest.mark.parametrize("frames", [220, 400])  # the last part's first 1 MiB chunk (37 frames): in memory / on disk
def test_a_killed_session_keeps_its_closed_parts_and_what_reached_the_disk(tmp_path: Path, frames: int) -> None:
    """recorder_node closes a part at each episode end; a kill -9 leaves the part being written without metadata.yaml
    and its mcap without a footer. Reading the session directory keeps every closed part whole and the cut-off part
    up to its last complete record (or leaves it out when nothing of it reached the disk), and says so."""
    import signal
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", KILLED_SESSION, str(tmp_path / "s"), str(frames)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    parts = sorted((tmp_path / "s").iterdir())
    assert [(p / "metadata.yaml").is_file() for p in parts] == [True, True, False]
    with BagReader(tmp_path / "s") as r:
        frames_read = [rec.stamp_ns - T0 for rec in r.read("/camera")]
        pixels = {int(image_to_rgb(rec.msg)[0, 0, 0]) == (rec.stamp_ns - T0) % 256 for rec in r.read("/camera")}
        markers = [rec.msg.data for rec in r.read("/wm_vla/episode")]
        issues = r.issues.to_dict()
    assert markers == ["end", "end"] and frames_read[:200] == list(range(200)) and pixels == {True}
    assert frames_read == list(range(len(frames_read))) and len(frames_read) < frames  # a clean prefix of the rest
    assert len(frames_read) > 200 if frames == 400 else len(frames_read) == 200
    assert issues["truncated"]["count"] == 1 and "wm_vla_0002" in issues["truncated"]["example"]
    for part in parts[:2]:  # each closed part still reads on its own, with nothing to report
        with BagReader(part) as r:
            assert len(r.read("/camera")) == 100 and not r.issues.counts


def test_unopenable_bags_raise_bag_open_error(tmp_path: Path) -> None:
    with pytest.raises(BagOpenError, match="no such bag"):
        BagReader(tmp_path / "missing")
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap at all")
    with pytest.raises(BagOpenError, match="cannot open"):
        BagReader(junk)
    bag = _js_bag(tmp_path / "s", [T0])
    db = tmp_path / "db"
    with BagRecorder(RecorderConfig(db, storage="sqlite3")) as rec:
        for i in range(200):
            rec.write("/s", "std_msgs/msg/String", m.string("x" * 100), T0 + i)
    (f,) = rec.parts[0].glob("*.db3")
    f.write_bytes(f.read_bytes()[:3000])
    with pytest.raises(BagOpenError, match="malformed|cannot open"):
        BagReader(rec.parts[0])
    assert bag.is_dir()


def test_unknown_type_and_missing_topic_and_non_monotonic_stamps(tmp_path: Path) -> None:
    store = bag_typestore()
    w = Writer(tmp_path / "u", version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    foo = w.add_connection("/foo", "foo_msgs/msg/Bar", msgdef="int32 !!! not a msg", rihs01="RIHS01_00")
    js = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=store)
    for i, s in enumerate([3, 1, 2, 5, 4]):   # two stamps go backwards
        w.write(foo, T0 + i, b"\x00\x01\x00\x00abcd")
        w.write(js, T0 + i, store.serialize_cdr(m.joint_state(["a"], np.array([float(s)]), T0 + s),
                                                "sensor_msgs/msg/JointState"))
    w.close()
    with BagReader(tmp_path / "u") as r:
        recs = r.read("/joint_states")
        assert [x.msg.position[0] for x in recs] == [1, 2, 3, 4, 5]          # sorted by header stamp
        assert r.read("/foo") == []
        with pytest.raises(BagMessageError, match="foo_msgs/msg/Bar"):
            r.require("/foo", "camera")
        with pytest.raises(BagTopicError, match="(?s)no camera topic '/cam'.*/joint_states"):
            r.require("/cam", "camera")
        issues = r.issues.to_dict()
    assert issues["non_monotonic_stamps"]["count"] == 2
    assert issues["unknown_type"]["count"] == 5


# ----- decision points from the sim bag -----
def test_decision_points_align_images_state_and_recorded_commands(simbag: tuple[Path, dict]) -> None:
    path, summary = simbag
    data = load_decisions(path, _topics(), _load_cfg(max_age_ms=50.0))
    assert data.mode == "frames" and not data.issues.counts and not data.warnings
    assert len(data.episodes) == 2
    steps = [e["steps"] for e in summary["episodes"]]
    with Reader(path) as reader:
        store = bag_typestore()
        raw = {t: [] for t in ("/arm_controller/joint_trajectory", "/gripper_controller/commands", "/joint_states",
                               "/camera/front/color/image_raw")}
        for conn, _, d in reader.messages(connections=[c for c in reader.connections if c.topic in raw]):
            raw[conn.topic].append(store.deserialize_cdr(d, conn.msgtype))
    stamps = [msg.header.stamp.sec * NS + msg.header.stamp.nanosec for msg in raw["/joint_states"]]
    ep_start = np.cumsum([0, *steps])
    for dp in data.decisions:
        k = stamps.index(dp.stamp_ns)           # decisions sit on camera frames that have a joint state
        ep = int(np.searchsorted(ep_start, k, side="right") - 1)
        assert dp.episode == ep and (k - ep_start[ep]) % 4 == 0    # every 0.4 s = 4 frames, restarting per episode
        np.testing.assert_allclose(dp.state, raw["/joint_states"][k].position[:7], rtol=1e-6)
        front = image_to_rgb(raw["/camera/front/color/image_raw"][k])
        np.testing.assert_array_equal(dp.images[0], front.transpose(2, 0, 1))
        for i in range(8):
            if k + i < ep_start[ep + 1]:       # within the episode: exactly the commands of step k + i
                want = np.r_[raw["/arm_controller/joint_trajectory"][k + i].points[0].positions,
                             raw["/gripper_controller/commands"][k + i].data[0]]
                np.testing.assert_allclose(dp.recorded[i], want)
            else:
                assert np.isnan(dp.recorded[i]).all()
        assert (dp.future_images is not None) == (k + 8 < ep_start[ep + 1])   # t + H inside the episode
    assert len(data.decisions) == sum((n + 3) // 4 for n in steps)


def test_episodes_from_the_marker_topic_match_the_gaps(simbag: tuple[Path, dict]) -> None:
    path, _ = simbag
    by_gap = load_decisions(path, _topics(), _load_cfg())
    by_marker = load_decisions(path, _topics().with_overrides({"marker": "/wm_vla/episode"}), _load_cfg(gap_s=None))
    assert by_marker.topics["marker"] == "/wm_vla/episode" and len(by_marker.episodes) == 2
    assert [(d.stamp_ns, d.episode) for d in by_marker.decisions] == [(d.stamp_ns, d.episode) for d in by_gap.decisions]
    one = load_decisions(path, _topics(), _load_cfg(gap_s=None))
    assert len(one.episodes) == 1   # without episodes, the last command holds through the pause: fewer NaN steps
    assert sum(np.isnan(d.recorded).sum() for d in one.decisions) < sum(np.isnan(d.recorded).sum()
                                                                        for d in by_gap.decisions)


def test_decision_points_without_commands_or_cameras(simbag: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = simbag
    topics = _topics().with_overrides({"command.0": "/none/a", "command.1": "/none/b", "instruction": "/none/i"})
    data = load_decisions(path, topics, _load_cfg(max_decisions=3))
    assert len(data.decisions) == 3 and all(np.isnan(d.recorded).all() for d in data.decisions)
    assert any("no recorded commands" in w for w in data.warnings)
    assert any("no instruction topic" in w for w in data.warnings)
    with pytest.raises(BagTopicError, match="no camera 'front' image topic '/none/cam'"):
        load_decisions(path, _topics().with_overrides({"front": "/none/cam"}), _load_cfg())
    with pytest.raises(BagAlignmentError, match="no decision point"):
        load_decisions(path, _topics(), _load_cfg(max_age_ms=0.0, ranges=[(100.0, 200.0)]))
    with pytest.raises(BagAlignmentError, match="bad_state"):   # state names the bag's joint_states lacks
        load_decisions(path, _topics(), _load_cfg(state_names=("vx", "vy", "wz")))


def test_quadruped_bag_state_from_odometry_and_commands_from_cmd_vel(tmp_path: Path) -> None:
    """Body-velocity robot: state (x, y, yaw, vx, vy, wz) as of each frame from /odom, chunks from TwistStamped."""
    from transforms3d.euler import euler2quat

    quad = load_profile("quadruped")
    ts = bag_typestore().types
    vec, period = ts["geometry_msgs/msg/Vector3"], NS // 10
    with BagRecorder(RecorderConfig(tmp_path / "q")) as rec:
        for i in range(100):   # odometry at 50 Hz for 2 s: yaw = 0.01 * i
            t = T0 + i * NS // 50
            w, x, y, z = euler2quat(0.0, 0.0, 0.01 * i)
            pose = ts["geometry_msgs/msg/PoseWithCovariance"](pose=ts["geometry_msgs/msg/Pose"](
                position=ts["geometry_msgs/msg/Point"](x=0.1 * i, y=0.0, z=0.0),
                orientation=ts["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)), covariance=np.zeros(36))
            twist = ts["geometry_msgs/msg/TwistWithCovariance"](twist=ts["geometry_msgs/msg/Twist"](
                linear=vec(x=float(i), y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=0.5)), covariance=np.zeros(36))
            rec.write("/odom", "nav_msgs/msg/Odometry", ts["nav_msgs/msg/Odometry"](
                header=m.header(t, "odom"), child_frame_id="base_link", pose=pose, twist=twist), t)
        for i in range(20):    # head camera at 10 Hz; cmd_vel for the first second only
            t = T0 + i * period
            rec.write("/camera/camera/color/image_raw", "sensor_msgs/msg/Image",
                      m.image(np.full((8, 8, 3), i, np.uint8), t), t + 1000)
            if i < 10:
                cmd = ts["geometry_msgs/msg/Twist"](linear=vec(x=0.01 * i, y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=-0.1))
                rec.write("/cmd_vel", "geometry_msgs/msg/TwistStamped",
                          ts["geometry_msgs/msg/TwistStamped"](header=m.header(t + period // 2), twist=cmd), t + period // 2)
    cfg = LoadConfig(("head",), 8, tuple(quad.state.names), tuple(quad.action.names), horizon=4, fps=10.0, every_s=0.5,
                     max_age_ms=30.0)
    data = load_decisions(rec.parts[0], TopicMap.from_profile(quad, ("head",)), cfg)
    assert data.topics["state"] == "/odom" and data.topics["command:twist"] == "/cmd_vel" and not data.issues.counts
    assert [round((d.stamp_ns - T0) / period) for d in data.decisions] == [0, 5, 10, 15]
    for d in data.decisions:
        k = (d.stamp_ns - T0) // (NS // 50)                      # the odometry sample at the frame, not a later one
        np.testing.assert_allclose(d.state, [0.1 * k, 0, 0.01 * k, k, 0, 0.5], atol=1e-5)
        assert d.images[0, 0, 0, 0] == round((d.stamp_ns - T0) / period)
    np.testing.assert_allclose(data.decisions[1].recorded, [[0.01 * i, 0, -0.1] for i in (5, 6, 7, 8)], atol=1e-12)
    np.testing.assert_allclose(data.decisions[2].recorded[:, 0], 0.09)   # the last command holds for 0.5 s ...
    np.testing.assert_allclose(data.decisions[3].recorded, 0.0)          # ... then cmd_vel times out: stop


def test_compressed_images_are_found_and_decoded(simbag: tuple[Path, dict], tmp_path: Path) -> None:
    """A bag with only `<camera>/compressed` (png, lossless) gives the same decision points as the raw one."""
    path, _ = simbag
    store = bag_typestore()
    comp_t = store.types["sensor_msgs/msg/CompressedImage"]
    with Reader(path) as reader, BagRecorder(RecorderConfig(tmp_path / "c")) as rec:
        for conn, t, d in reader.messages():
            msg = store.deserialize_cdr(d, conn.msgtype)
            if conn.msgtype == "sensor_msgs/msg/Image":
                ok, png = cv2.imencode(".png", image_to_rgb(msg)[..., ::-1])
                rec.write(conn.topic + "/compressed", "sensor_msgs/msg/CompressedImage",
                          comp_t(header=msg.header, format="bgr8; png compressed bgr8", data=png.reshape(-1)), t)
            else:
                rec.write(conn.topic, conn.msgtype, msg, t)
    raw = load_decisions(path, _topics(), _load_cfg(max_decisions=4))
    comp = load_decisions(rec.parts[0], _topics(), _load_cfg(max_decisions=4))
    assert comp.topics["camera.front"] == "/camera/front/color/image_raw/compressed"
    for a, b in zip(raw.decisions, comp.decisions):
        assert a.stamp_ns == b.stamp_ns
        np.testing.assert_array_equal(a.images, b.images)
    shutil.rmtree(tmp_path / "c")
