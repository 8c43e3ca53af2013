"""sensor_msgs/Image and CompressedImage <-> RGB uint8 arrays (H, W, 3)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from wm_vla.data.errors import BagMessageError

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3}
TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
          "mono8": cv2.COLOR_GRAY2RGB, "8UC1": cv2.COLOR_GRAY2RGB}


def image_to_rgb(msg: Any) -> np.ndarray:
    """A raw or compressed image message -> (H, W, 3) uint8 RGB (a copy)."""
    if hasattr(msg, "format"):  # CompressedImage: jpeg/png, possibly "rgb8; jpeg compressed bgr8"
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BagMessageError(f"cannot decode compressed image (format {msg.format!r}, {len(msg.data)} bytes)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    enc, h, w, step = str(msg.encoding), int(msg.height), int(msg.width), int(msg.step)
    if enc not in CHANNELS:
        raise BagMessageError(f"unsupported image encoding {enc!r} (supported: {', '.join(CHANNELS)})")
    c = CHANNELS[enc]
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, np.uint8)
    if h <= 0 or w <= 0 or step < w * c or data.size < step * h:
        raise BagMessageError(f"image {w}x{h} {enc} with step {step} needs {step * h} bytes, has {data.size}")
    img = data[: step * h].reshape(h, step)[:, : w * c].reshape(h, w, c)
    return cv2.cvtColor(img, TO_RGB[enc]) if enc in TO_RGB else img.copy()


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "bgr8") -> dict[str, Any]:
    """Fields of a sensor_msgs/Image (height, width, encoding, is_bigendian, step, data) for an RGB array."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise BagMessageError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    if encoding == "bgr8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "rgb8":
        pixels = rgb
    elif encoding == "mono8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
    else:
        raise BagMessageError(f"cannot write image encoding {encoding!r} (rgb8, bgr8, mono8)")
    h, w, c = pixels.shape
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0, "step": w * c,
            "data": np.ascontiguousarray(pixels).reshape(-1)}
