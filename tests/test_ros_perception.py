"""perception_node over real rclpy / Fast DDS: camera topics in rgb8/bgr8/mono8 and CompressedImage -> Observation
with the camera stamp and the as-of joint state; stale, malformed and NaN inputs dropped with counted diagnostics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CompressedImage, Image, JointState
from wm_vla_interfaces.msg import Observation

from node_common.msgs import SENSOR_QOS, from_ns, to_ns
from ros_stack_helpers import Probe, Received
from wm_vla.bringup import NodeSpec
from wm_vla.launcher import Stack
from wm_vla.robots import load_profile

pytestmark = pytest.mark.ros
ARM = load_profile("arm")
NAMES = list(ARM.state.names)
Q = np.linspace(-0.5, 0.6, len(NAMES))


class Rig:
    def __init__(self, probe: Probe) -> None:
        n = probe.node
        self.probe = probe
        self.raw = n.create_publisher(Image, "/test/raw", SENSOR_QOS)
        self.jpeg = n.create_publisher(CompressedImage, "/test/compressed", SENSOR_QOS)
        self.js = n.create_publisher(JointState, ARM.topics.joint_states, SENSOR_QOS)
        self.raw_obs = probe.record(Observation, "/test/obs_raw", SENSOR_QOS)
        self.jpeg_obs = probe.record(Observation, "/test/obs_compressed", SENSOR_QOS)
        self.diag = probe.record(DiagnosticArray, "/diagnostics", 10)

    def now_ns(self) -> int:
        return self.probe.node.get_clock().now().nanoseconds

    def joint_state(self, stamp_ns: int, q: np.ndarray = Q) -> None:
        # shuffled order plus an extra joint: perception reorders to the profile's state order
        msg = JointState(name=[*reversed(NAMES), "finger_right_joint"], position=[*map(float, q[::-1]), 0.0])
        msg.header.stamp = from_ns(stamp_ns)
        self.js.publish(msg)

    def image(self, pixels: np.ndarray, encoding: str, stamp_ns: int, step: int | None = None) -> None:
        h, w = pixels.shape[:2]
        msg = Image(height=h, width=w, encoding=encoding, step=step or pixels[0].nbytes, data=pixels.tobytes())
        msg.header.stamp = from_ns(stamp_ns)
        self.raw.publish(msg)

    def counters(self, t0: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, m in self.diag.since(t0):
            for s in m.status:
                if s.name.endswith("perception_raw"):
                    out = {kv.key: int(kv.value) for kv in s.values}
        return out


@pytest.fixture(scope="module")
def rig(ros_domain: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    common = {"robot": "arm", "camera_names": ["wrist"], "image_size": 32, "max_state_age_ms": 150.0,
              "max_frame_age_ms": 600.0}  # room for the probe's delivery lag on a busy machine (stale case: 1 s)
    specs = [NodeSpec("perception_raw", "perception_node", "perception_node.node",
                      {**common, "camera_topics": ["/test/raw"], "output": "/test/obs_raw"}),
             NodeSpec("perception_compressed", "perception_node", "perception_node.node",
                      {**common, "camera_topics": ["/test/compressed"], "compressed": True,
                       "output": "/test/obs_compressed"})]
    with Stack(specs, log_dir=tmp_path_factory.mktemp("perception")) as stack:
        probe = Probe()
        rig = Rig(probe)
        try:
            probe.wait(lambda: rig.raw.get_subscription_count() > 0 and rig.jpeg.get_subscription_count() > 0
                       and rig.js.get_subscription_count() > 1, 60, "perception subscriptions")
            time.sleep(0.5)
            yield rig
        finally:
            assert not stack.failed(), stack.log("perception_raw")
            probe.close()


def settle(box: Received, t0: float, n: int = 1, timeout: float = 5.0) -> list[Observation]:
    deadline = time.monotonic() + timeout
    while len(box.since(t0)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    return [m for _, m in box.since(t0)]


@pytest.mark.parametrize(("encoding", "channels"), [("rgb8", 3), ("bgr8", 3), ("mono8", 1)])
def test_frame_becomes_an_observation_with_the_camera_stamp(rig: Rig, encoding: str, channels: int) -> None:
    t0 = rig.probe.now()
    stamp = rig.now_ns()
    rig.joint_state(stamp - 30_000_000)                       # 30 ms before the frame: as-of pairs it
    rig.joint_state(stamp + 20_000_000, Q + 1.0)              # after the frame: must not be used
    colour = {"rgb8": [200, 10, 10], "bgr8": [10, 10, 200], "mono8": [90]}[encoding]
    pixels = np.zeros((48, 64, channels), np.uint8) + np.array(colour, np.uint8)
    rig.image(pixels.squeeze(), encoding, stamp)
    (obs,) = settle(rig.raw_obs, t0)
    assert to_ns(obs.header.stamp) == stamp and obs.header.frame_id == ARM.base_link
    assert list(obs.camera_names) == ["wrist"] and to_ns(obs.images[0].header.stamp) == stamp
    img = np.frombuffer(bytes(obs.images[0].data), np.uint8).reshape(32, 32, 3)
    expected = [200, 10, 10] if encoding != "mono8" else [90, 90, 90]
    assert obs.images[0].encoding == "rgb8" and np.all(np.abs(img.astype(int) - expected) <= 1)
    np.testing.assert_allclose(np.asarray(obs.state), Q)


def test_compressed_frames_are_decoded(rig: Rig) -> None:
    t0 = rig.probe.now()
    stamp = rig.now_ns()
    rig.joint_state(stamp - 10_000_000)
    bgr = np.zeros((40, 40, 3), np.uint8)
    bgr[..., 1] = 255
    msg = CompressedImage(format="png", data=cv2.imencode(".png", bgr)[1].tobytes())
    msg.header.stamp = from_ns(stamp)
    rig.jpeg.publish(msg)
    (obs,) = settle(rig.jpeg_obs, t0)
    img = np.frombuffer(bytes(obs.images[0].data), np.uint8).reshape(32, 32, 3)
    assert to_ns(obs.header.stamp) == stamp and img[..., 1].min() == 255 and img[..., 0].max() == 0


@pytest.mark.parametrize("case", ["stale_frame", "size", "encoding", "non_finite", "stale_state"])
def test_bad_inputs_are_dropped_and_counted_never_forwarded(rig: Rig, case: str) -> None:
    t0 = rig.probe.now()
    before = rig.counters(0).get(f"dropped_{case}", 0)
    stamp = rig.now_ns()
    pixels = np.zeros((48, 64, 3), np.uint8)
    if case == "stale_frame":
        rig.joint_state(stamp - 1_010_000_000)
        rig.image(pixels, "rgb8", stamp - 1_000_000_000)          # 1 s old on arrival
    elif case == "size":
        rig.joint_state(stamp)
        rig.image(pixels, "rgb8", stamp, step=100)                 # step * height != len(data)
    elif case == "encoding":
        rig.joint_state(stamp)
        rig.image(pixels[..., 0].astype(np.uint16), "16UC1", stamp)
    elif case == "non_finite":
        bad = Q.copy()
        bad[1] = np.nan
        rig.joint_state(stamp, bad)
    else:
        rig.joint_state(stamp - 400_000_000)                       # newest state 400 ms before the frame
        rig.image(pixels, "rgb8", stamp)
    rig.probe.wait(lambda: rig.counters(t0).get(f"dropped_{case}", 0) > before, 5.0, f"a dropped_{case} count")
    assert not [m for m in settle(rig.raw_obs, t0, 0, 0.3) if to_ns(m.header.stamp) in (stamp, stamp - 10**9)]


def test_opencv_source_reads_a_video_file(ros_domain: int, tmp_path: Path) -> None:
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20, (64, 48))
    for i in range(40):
        writer.write(np.full((48, 64, 3), (0, 0, 100 + i), np.uint8))  # BGR: red ramps up
    writer.release()
    spec = NodeSpec("perception_cv", "perception_node", "perception_node.node",
                    {"robot": "arm", "source": "opencv", "device": str(video), "fps": 20.0, "camera_names": ["wrist"],
                     "image_size": 32, "output": "/test/obs_cv"})
    with Stack([spec], log_dir=tmp_path) as stack:
        probe = Probe()
        try:
            js = probe.node.create_publisher(JointState, ARM.topics.joint_states, SENSOR_QOS)
            got = probe.record(Observation, "/test/obs_cv", SENSOR_QOS)

            def feed() -> None:
                msg = JointState(name=NAMES, position=list(map(float, Q)))
                msg.header.stamp = probe.node.get_clock().now().to_msg()
                js.publish(msg)

            from ros_stack_helpers import Feeder

            feeder = Feeder(feed, 50.0)
            try:
                probe.wait(lambda: len(got.items) >= 5 or bool(stack.failed()), 60, "observations from the video")
            finally:
                feeder.stop()
            assert not stack.failed(), stack.log("perception_cv")
            img = np.frombuffer(bytes(got.items[-1][1].images[0].data), np.uint8).reshape(32, 32, 3)
            assert img[..., 0].mean() > 90 and img[..., 2].mean() < 10  # decoded BGR -> RGB
        finally:
            probe.close()


def test_camera_stamps_jumping_backwards_are_dropped_until_time_moves_forward(rig: Rig) -> None:
    pixels = np.zeros((48, 64, 3), np.uint8)
    t0 = rig.probe.now()
    before = rig.counters(0).get("dropped_stamp_backwards", 0)
    fresh: list[int] = []
    back: list[int] = []

    def warned() -> bool:
        return any("not after the previous" in s.message for _, m in rig.diag.since(t0) for s in m.status
                   if s.name.endswith("perception_raw") and s.level == DiagnosticStatus.WARN)

    def jump_back() -> bool:
        """A fresh frame, then one 80 ms earlier than it (still fresh: only the order is wrong); repeated until the
        drop is counted and a 1 s diagnostics period reports it as its WARN."""
        stamp = rig.now_ns()
        rig.joint_state(stamp - 100_000_000)
        rig.image(pixels, "rgb8", stamp)
        fresh.append(stamp)
        time.sleep(0.05)
        rig.image(pixels, "rgb8", stamp - 80_000_000)
        back.append(stamp - 80_000_000)
        time.sleep(0.05)
        return rig.counters(t0).get("dropped_stamp_backwards", 0) > before and warned()

    rig.probe.wait(jump_back, 8.0, "a dropped_stamp_backwards count and its WARN diagnostic")
    published = [to_ns(m.header.stamp) for m in settle(rig.raw_obs, t0, 1, 0.3)]
    assert published and set(published) <= set(fresh) and not set(published) & set(back)  # never an earlier one
    t1 = rig.probe.now()   # recovery: the next frame after the previous stamp is forwarded
    fwd = rig.now_ns()
    rig.joint_state(fwd - 10_000_000)
    rig.image(pixels, "rgb8", fwd)
    assert fwd in [to_ns(m.header.stamp) for m in settle(rig.raw_obs, t1)]
