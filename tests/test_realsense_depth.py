"""RealSense colour + aligned depth with real librealsense: an `rs.software_device` with a colour and a depth sensor
(known frames injected, global-time timestamps) feeds the realsense source's processing (rs.syncer + rs.align), then
perception_node itself (in this process, over real rclpy / Fast DDS) publishes the Observation and the depth image."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from wm_vla_interfaces.msg import Observation

from node_common.msgs import SENSOR_QOS, to_ns
from perception_node.node import Perception
from perception_node.sources import RealSenseFrame, RealSenseSource, aligned_depth
from ros_stack_helpers import Probe
from wm_vla.data.errors import FrameError
from wm_vla.data.images import fit
from wm_vla.robots import load_profile

rs = pytest.importorskip("pyrealsense2")
W, H, DW, DH = 64, 48, 32, 24  # colour wider than tall: the centre crop drops 8 columns each side
SIZE = 16
SEAM = 17  # depth column where 1 m becomes 2 m (colour column 34: off the 3-pixel blocks of the 48 -> 16 resize)


def _intrinsics(w: int, h: int) -> Any:
    i = rs.intrinsics()
    i.width, i.height, i.ppx, i.ppy, i.fx, i.fy = w, h, w / 2, h / 2, float(w), float(w)
    i.model, i.coeffs = rs.distortion.none, [0.0] * 5
    return i


class SoftCamera:
    """A librealsense software device: colour rgb8 W x H and depth z16 DW x DH (1 mm units, same optical centre and
    field of view), synced by librealsense's matcher into an rs.syncer."""

    def __init__(self) -> None:
        self.device = rs.software_device()
        self.color_sensor, self.depth_sensor = self.device.add_sensor("Color"), self.device.add_sensor("Depth")
        self.color = self.color_sensor.add_video_stream(self._stream(rs.stream.color, 0, W, H, 3, rs.format.rgb8))
        self.depth = self.depth_sensor.add_video_stream(self._stream(rs.stream.depth, 1, DW, DH, 2, rs.format.z16))
        self.depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
        ext = rs.extrinsics()
        ext.rotation, ext.translation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], [0.0, 0.0, 0.0]
        self.depth.register_extrinsics_to(self.color, ext)
        self.device.create_matcher(rs.matchers.dlr_c)
        self.syncer = rs.syncer()
        for sensor, profile in ((self.color_sensor, self.color), (self.depth_sensor, self.depth)):
            sensor.open(profile)
            sensor.start(self.syncer)
        self.n = 0
        self.keep: list[np.ndarray] = []  # librealsense reads the pixels after on_video_frame returns

    @staticmethod
    def _stream(kind: Any, uid: int, w: int, h: int, bpp: int, fmt: Any) -> Any:
        s = rs.video_stream()
        s.type, s.index, s.uid, s.width, s.height, s.fps, s.bpp, s.fmt = kind, 0, uid, w, h, 30, bpp, fmt
        s.intrinsics = _intrinsics(w, h)
        return s

    def inject(self, color: np.ndarray, depth: np.ndarray | None, stamp_ms: float) -> None:
        self.n += 1
        pairs = [(self.depth_sensor, self.depth, depth, 2)] if depth is not None else []
        for sensor, profile, pixels, bpp in [*pairs, (self.color_sensor, self.color, color, 3)]:
            pixels = np.ascontiguousarray(pixels)
            self.keep = [*self.keep[-8:], pixels]
            f = rs.software_video_frame()
            f.pixels, f.bpp, f.stride, f.timestamp = pixels, bpp, pixels.shape[1] * bpp, stamp_ms
            f.domain, f.frame_number, f.profile = rs.timestamp_domain.global_time, self.n, profile.as_video_stream_profile()
            sensor.on_video_frame(f)

    def close(self) -> None:
        for sensor in (self.color_sensor, self.depth_sensor):
            sensor.stop()
            sensor.close()


def scene() -> tuple[np.ndarray, np.ndarray]:
    """Red at 1 m left of the seam, blue at 2 m right of it; the depth's top-left block measured nothing (0)."""
    color = np.zeros((H, W, 3), np.uint8)
    color[:, : 2 * SEAM], color[:, 2 * SEAM:] = (255, 0, 0), (0, 0, 255)
    depth = np.full((DH, DW), 1000, np.uint16)
    depth[:, SEAM:] = 2000
    depth[: DH // 4, DW // 4: DW // 2] = 0
    return color, depth


@pytest.fixture()
def camera() -> Iterator[SoftCamera]:
    cam = SoftCamera()
    yield cam
    cam.close()


def grab(source: RealSenseSource, want_depth: bool = True, timeout: float = 5.0) -> RealSenseFrame:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = source.grab()
        if got is not None and (got.depth_m is not None or not want_depth):
            return got
        time.sleep(0.01)
    raise TimeoutError("no frame set from the software device")


def test_depth_is_aligned_to_colour_in_metres_with_the_device_timestamp(camera: SoftCamera) -> None:
    source = RealSenseSource(camera.syncer, depth=True)
    color, depth = scene()
    t0 = time.time() * 1e3
    for i in range(3):  # the matcher emits the very first colour frame alone
        camera.inject(color, depth, t0 + 33.3 * i)
    got = grab(source)
    assert got.global_time and min(abs(got.stamp_s * 1e3 - (t0 + 33.3 * i)) for i in range(3)) < 1e-3
    assert np.array_equal(got.rgb, color) and got.depth_m is not None and got.depth_m.shape == (H, W)
    d = got.depth_m
    assert d.dtype == np.float32 and np.nanmax(d) == pytest.approx(2.0) and np.nanmin(d) == pytest.approx(1.0)
    left, right = d[H // 4 + 2:, 2: 2 * SEAM - 2], d[:, 2 * SEAM + 2: W - 2]  # away from the seams
    assert np.allclose(left, 1.0) and np.allclose(right, 2.0)
    assert np.isnan(d[1: H // 4 - 2, W // 4 + 2: W // 2 - 2]).all()  # 0 (no data) -> NaN, REP 118
    # perception crops depth exactly like colour and resizes it nearest-neighbour (no blended depths at edges)
    rgb_fit, d_fit = fit(got.rgb, SIZE), fit(d, SIZE, nearest=True)
    assert d_fit.shape == (SIZE, SIZE) and set(np.unique(d_fit[np.isfinite(d_fit)])) <= {np.float32(1.0),
                                                                                          np.float32(2.0)}
    red, blue = rgb_fit[SIZE // 2:, :, 0] == 255, rgb_fit[SIZE // 2:, :, 2] == 255
    assert np.all(d_fit[SIZE // 2:][red] == 1.0) and np.all(d_fit[SIZE // 2:][blue] == 2.0)


def test_missing_depth_is_reported_and_the_colour_kept(camera: SoftCamera) -> None:
    source = RealSenseSource(camera.syncer, depth=True)
    color, _ = scene()
    t0 = time.time() * 1e3
    for i in range(2):
        camera.inject(color, None, t0 + 33.3 * i)
    got = grab(source, want_depth=False)
    assert got.depth_m is None and isinstance(got.depth_error, FrameError)
    assert got.depth_error.reason == "depth_missing" and np.array_equal(got.rgb, color)


@pytest.mark.parametrize("depth", [np.zeros((H, W - 1), np.uint16), np.zeros((H, W, 2), np.uint16)])
def test_wrong_size_depth_is_a_frame_error(depth: np.ndarray) -> None:
    with pytest.raises(FrameError, match="aligned depth is") as exc:
        aligned_depth(depth, 0.001, (H, W, 3))
    assert exc.value.reason == "depth_size"


class SoftPerception(Perception):
    """perception_node with the software device in place of the camera's pipeline (the same source code path)."""

    camera: SoftCamera

    def _open_source(self, p: dict[str, Any]) -> RealSenseSource:
        return RealSenseSource(self.camera.syncer, depth=bool(p["depth"]))


def test_perception_publishes_depth_with_the_observation_stamp(ros_domain: int, camera: SoftCamera) -> None:
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    SoftPerception.camera = camera
    node = SoftPerception(context=ctx, parameter_overrides=[
        Parameter("source", value="realsense"), Parameter("depth", value=True), Parameter("image_size", value=SIZE),
        Parameter("camera_names", value=["wrist"]), Parameter("output", value="/test/rs_obs"),
        Parameter("depth_topic", value="/test/rs_depth"), Parameter("fps", value=60.0),
        Parameter("max_state_age_ms", value=500.0)])
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    probe = Probe()
    obs, depth_box = probe.record(Observation, "/test/rs_obs", SENSOR_QOS), probe.record(Image, "/test/rs_depth",
                                                                                        SENSOR_QOS)
    diag = probe.record(DiagnosticArray, "/diagnostics", 10)
    js_pub = probe.node.create_publisher(JointState, load_profile("arm").topics.joint_states, SENSOR_QOS)
    names = list(load_profile("arm").state.names)
    color, depth = scene()
    try:
        def feed(with_depth: bool, n: int) -> None:
            for _ in range(n):
                js = JointState(name=names, position=[0.1] * len(names))
                js.header.stamp = probe.node.get_clock().now().to_msg()
                js_pub.publish(js)
                time.sleep(0.02)
                camera.inject(color, depth if with_depth else None, time.time() * 1e3)
                time.sleep(0.03)

        probe.wait(lambda: js_pub.get_subscription_count() > 0, 20, "perception's joint-state subscription")
        feed(True, 30)
        probe.wait(lambda: len(depth_box.items) >= 3, 10, "depth images")
        obs_stamps = {to_ns(m.header.stamp) for _, m in obs.since(0.0)}
        for _, m in depth_box.since(0.0):
            assert to_ns(m.header.stamp) in obs_stamps  # each depth image belongs to a published Observation
            assert (m.encoding, m.height, m.width, m.step) == ("32FC1", SIZE, SIZE, SIZE * 4)
            d = np.frombuffer(bytes(m.data), np.float32).reshape(SIZE, SIZE)
            assert set(np.unique(d[np.isfinite(d)])) <= {np.float32(1.0), np.float32(2.0)}
            assert m.header.frame_id == "wrist_camera_optical_frame"
        wall = time.time()  # device (global) time is the stamp: within the injection window, not the node's receipt
        assert all(abs(s * 1e-9 - wall) < 10.0 for s in obs_stamps)
        n_obs, n_depth = len(obs.items), len(depth_box.items)
        t0 = probe.now()
        feed(False, 15)  # the depth stream dies: colour observations go on, the depth is dropped and counted
        probe.wait(lambda: any(kv.key == "dropped_depth_missing" and int(kv.value) > 0 for _, m in diag.since(t0)
                               for s in m.status if s.name.endswith("perception_node") for kv in s.values),
                   10, "the dropped_depth_missing counter")
        assert len(obs.items) > n_obs and len(depth_box.items) <= n_depth + 1
    finally:
        probe.close()
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
