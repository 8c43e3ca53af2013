"""Frame grabbers for the non-topic sources (import-guarded: pyrealsense2 and a camera are optional)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from wm_vla.data.errors import FrameError


class OpenCvSource:
    """A V4L2 index or a video file/URL through cv2.VideoCapture; `grab()` -> RGB uint8 or None at the end."""

    def __init__(self, device: str) -> None:
        self.cap = cv2.VideoCapture(int(device) if device.isdigit() else device)
        self.is_file = not device.isdigit()  # a video file loops (replay); a V4L2 device streams
        if not self.cap.isOpened():
            raise FrameError("source", f"opencv source {device!r} cannot be opened")

    def grab(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok and self.is_file:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok else None

    def close(self) -> None:
        self.cap.release()


@dataclass
class RealSenseFrame:
    """One colour frame, its device timestamp (s; system time when `global_time`) and, with depth enabled, the depth
    aligned to it (metres, float32, NaN where the camera measured nothing) or why there is none (`depth_error`)."""

    rgb: np.ndarray
    stamp_s: float
    global_time: bool
    depth_m: np.ndarray | None = None
    depth_error: FrameError | None = None


def aligned_depth(depth: np.ndarray, units_m: float, color_shape: tuple[int, ...]) -> np.ndarray:
    """z16 depth aligned to colour -> float32 metres (0 = no data -> NaN, REP 118); FrameError unless it has the
    colour image's size."""
    if depth.ndim != 2 or depth.shape != tuple(color_shape[:2]):
        raise FrameError("depth_size", f"aligned depth is {depth.shape}, the colour image {tuple(color_shape[:2])}")
    metres = depth.astype(np.float32) * np.float32(units_m)
    metres[depth == 0] = np.nan
    return metres


class RealSenseSource:
    """Colour (+ depth aligned to colour with rs.align) from any librealsense frame source with `poll_for_frames()`:
    the hardware `rs.pipeline` (:meth:`open`) or an `rs.syncer` fed by a sensor, e.g. of an `rs.software_device`."""

    def __init__(self, frames: Any, depth: bool = False, stop: Callable[[], None] | None = None) -> None:
        import pyrealsense2 as rs  # type: ignore[import-not-found]

        self.rs, self.frames, self.depth, self.stop = rs, frames, depth, stop
        self.align = rs.align(rs.stream.color) if depth else None

    @classmethod
    def open(cls, width: int, height: int, fps: int, serial: str = "", depth: bool = False) -> RealSenseSource:
        """Start the camera's pipeline (colour rgb8, + z16 depth at the same size and rate when `depth`)."""
        try:
            import pyrealsense2 as rs  # type: ignore[import-not-found]
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise FrameError("source", f"the realsense source needs pyrealsense2 ({exc})") from exc
        pipeline = rs.pipeline()
        cfg = rs.config()
        if serial:
            cfg.enable_device(serial)
        cfg.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        if depth:
            cfg.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
        try:
            profile = pipeline.start(cfg)
        except RuntimeError as exc:
            raise FrameError("source", f"realsense pipeline cannot start: {exc}") from exc
        for sensor in profile.get_device().query_sensors():  # device timestamps in system time (when supported)
            if sensor.supports(rs.option.global_time_enabled):
                sensor.set_option(rs.option.global_time_enabled, 1)
        return cls(pipeline, depth, pipeline.stop)

    def grab(self) -> RealSenseFrame | None:
        """The newest frame set, or None when none is waiting (or it has no colour frame)."""
        frames = self.frames.poll_for_frames()
        if not frames:
            return None
        color = frames.get_color_frame()
        if not color:
            return None
        rgb = np.asanyarray(color.get_data()).copy()
        global_time = color.get_frame_timestamp_domain() == self.rs.timestamp_domain.global_time
        out = RealSenseFrame(rgb, color.get_timestamp() / 1e3, global_time)
        if self.align is None:
            return out
        depth = self.align.process(frames).get_depth_frame() if frames.get_depth_frame() else None
        if not depth:
            out.depth_error = FrameError("depth_missing", "the frame set has no depth frame")
            return out
        try:
            out.depth_m = aligned_depth(np.asanyarray(depth.get_data()), depth.get_units(), rgb.shape)
        except FrameError as exc:
            out.depth_error = exc
        return out

    def close(self) -> None:
        if self.stop is not None:
            self.stop()
