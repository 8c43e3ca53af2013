"""ROS-free perception helpers: image decoding (ROS encodings, compressed), crop/resize, as-of state pairing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from wm_vla.data.errors import FrameError
from wm_vla.data.images import decode_compressed, decode_raw, fit
from wm_vla.data.sync import AsOfBuffer


def test_decode_encodings_to_rgb() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red
    bgr = rgb[..., ::-1].copy()
    np.testing.assert_array_equal(decode_raw(rgb.tobytes(), 4, 6, 18, "rgb8"), rgb)
    np.testing.assert_array_equal(decode_raw(bgr.tobytes(), 4, 6, 18, "bgr8"), rgb)
    mono = np.full((4, 6), 77, np.uint8)
    assert decode_raw(mono.tobytes(), 4, 6, 6, "mono8").tolist() == np.full((4, 6, 3), 77).tolist()
    padded = np.zeros((4, 20), np.uint8)  # row padding: step > width * channels
    padded[:, :18] = rgb.reshape(4, 18)
    np.testing.assert_array_equal(decode_raw(padded.tobytes(), 4, 6, 20, "rgb8"), rgb)


@pytest.mark.parametrize(("data", "h", "w", "step", "enc", "reason"), [
    (b"\x00" * 72, 4, 6, 18, "16UC1", "encoding"),
    (b"\x00" * 71, 4, 6, 18, "rgb8", "size"),
    (b"\x00" * 72, 4, 6, 10, "rgb8", "size"),
    (b"", 0, 6, 18, "rgb8", "size"),
])
def test_malformed_frames_are_rejected_with_a_reason(data: bytes, h: int, w: int, step: int, enc: str,
                                                     reason: str) -> None:
    with pytest.raises(FrameError) as err:
        decode_raw(data, h, w, step, enc)
    assert err.value.reason == reason


def test_compressed_roundtrip_and_garbage() -> None:
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :, 2] = 255  # blue
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(decode_compressed(png.tobytes()), rgb)
    with pytest.raises(FrameError, match="cannot decode"):
        decode_compressed(b"not an image")


def test_fit_centre_crops_then_resizes() -> None:
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, :80] = 255   # left band: cropped away by the centre square
    out = fit(img, 96)
    assert out.shape == (96, 96, 3) and out.max() == 0


def test_as_of_pairs_the_newest_sample_not_after_the_stamp_within_bounded_age() -> None:
    buf: AsOfBuffer[str] = AsOfBuffer(max_age_s=0.1)
    for t, v in ((1.0, "a"), (1.05, "b"), (1.2, "c")):
        buf.add(t, v)
    buf.add(1.1, "late")   # out of order: kept sorted
    assert buf.as_of(1.06).value == "b"
    assert buf.as_of(1.15).value == "late"
    with pytest.raises(FrameError) as err:
        buf.as_of(0.5)
    assert err.value.reason == "no_state"
    with pytest.raises(FrameError) as err:
        buf.as_of(1.9)
    assert err.value.reason == "stale_state"
