"""Camera frames as numpy: decode ROS image encodings (raw or compressed) to RGB uint8 and resize for the model."""

from __future__ import annotations

import cv2
import numpy as np

from wm_vla.data.errors import FrameError

CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def decode_raw(data: bytes | bytearray | memoryview, height: int, width: int, step: int, encoding: str) -> np.ndarray:
    """A sensor_msgs/Image payload (rgb8 | bgr8 | mono8 | rgba8 | bgra8) -> (height, width, 3) RGB uint8."""
    channels = CHANNELS.get(encoding)
    if channels is None:
        raise FrameError("encoding", f"unsupported image encoding {encoding!r} (supported: {', '.join(CHANNELS)})")
    if height <= 0 or width <= 0 or step < width * channels:
        raise FrameError("size", f"bad image geometry {width}x{height}, step {step} for {encoding}")
    buf = np.frombuffer(data, np.uint8)
    if buf.size != height * step:
        raise FrameError("size", f"image data has {buf.size} bytes, expected height*step = {height * step}")
    img = buf.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    return _to_rgb(img, encoding)


def decode_compressed(data: bytes | bytearray | memoryview) -> np.ndarray:
    """A sensor_msgs/CompressedImage payload (jpeg/png) -> RGB uint8."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise FrameError("decode", f"cannot decode a compressed image of {len(data)} bytes")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def fit(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Centre-crop to a square, then resize to size x size (RGB uint8; `nearest` for depth or label images, whose
    values must not be blended)."""
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = image[y0: y0 + side, x0: x0 + side]
    if side == size:
        return np.ascontiguousarray(crop)
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def _to_rgb(img: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "rgb8":
        return img.copy()
    code = {"bgr8": cv2.COLOR_BGR2RGB, "mono8": cv2.COLOR_GRAY2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
            "bgra8": cv2.COLOR_BGRA2RGB}[encoding]
    return cv2.cvtColor(img, code)
