"""Frame grabbers for the non-topic sources (import-guarded: pyrealsense2 and a camera are optional)."""

from __future__ import annotations

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


class RealSenseSource:
    """pyrealsense2 colour stream; frames carry the device timestamp (ms, global time domain when supported)."""

    def __init__(self, width: int, height: int, fps: int, serial: str = "") -> None:
        try:
            import pyrealsense2 as rs  # type: ignore[import-not-found]
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise FrameError("source", f"the realsense source needs pyrealsense2 ({exc})") from exc
        self.rs: Any = rs
        self.pipeline = rs.pipeline()
        cfg = rs.config()
        if serial:
            cfg.enable_device(serial)
        cfg.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        try:
            profile = self.pipeline.start(cfg)
        except RuntimeError as exc:
            raise FrameError("source", f"realsense pipeline cannot start: {exc}") from exc
        for sensor in profile.get_device().query_sensors():  # device timestamps in system time (when supported)
            if sensor.supports(rs.option.global_time_enabled):
                sensor.set_option(rs.option.global_time_enabled, 1)

    def grab(self) -> tuple[np.ndarray, float] | None:
        frames = self.pipeline.poll_for_frames()
        if not frames:
            return None
        color = frames.get_color_frame()
        return np.asanyarray(color.get_data()).copy(), color.get_timestamp() / 1e3

    def close(self) -> None:
        self.pipeline.stop()
