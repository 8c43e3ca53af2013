"""Publisher side of the wm_vla_interfaces round-trip tests (tests/test_interfaces.py).

`make_payload(seed)` gives deterministic field values; run as a script, this module publishes
them as ActionCandidates, RankingResult and Observation on latched (reliable, transient-local)
topics from a separate process, and lingers so late subscribers still get them. The test
process rebuilds the same payload and checks the received messages field by field against it.

    python tests/ros_pubsub_helpers.py --seed 7 --linger 60
"""

from __future__ import annotations

import argparse
import array
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from numpy.typing import NDArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header
from wm_vla_interfaces.msg import ActionCandidates, Observation, RankingResult

TOPIC_CANDIDATES = "/wm_vla_test/action_candidates"
TOPIC_RANKING = "/wm_vla_test/ranking_result"
TOPIC_OBSERVATION = "/wm_vla_test/observation"
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)

# float32 values whose bits must survive the trip: -0.0, +-inf, the smallest denormal, the
# largest finite value and a NaN with a payload.
SPECIAL_F32_BITS = np.array(
    [0x80000000, 0x7F800000, 0xFF800000, 0x00000001, 0x7F7FFFFF, 0x7FC00123], dtype=np.uint32
)


@dataclass(frozen=True)
class Payload:
    """Field values of the three test messages; arrays have their message dtype."""

    stamp_sec: int
    stamp_nanosec: int
    frame_id: str
    action_names: list[str]
    actions: NDArray[np.float32]  # (K, H, A) float32
    obs_latent: NDArray[np.float32]  # (latent_dim,) float32
    future_latents: NDArray[np.float32]  # (K, M, latent_dim) float32
    policy_scores: NDArray[np.float32]  # (K,) float32
    seed: int
    instruction: str
    policy_id: str
    chosen: int
    scores: NDArray[np.float32]  # (K,) float32
    progress: NDArray[np.float32]  # (K,) float32
    failure_prob: NDArray[np.float32]  # (K,) float32
    stage_names: list[str]
    stage_ms: NDArray[np.float32]  # (len(stage_names),) float32
    camera_names: list[str]
    images: list[NDArray[Any]]  # (rows, cols, 3) uint8 "rgb8" and (rows, cols) uint16 "16UC1"
    joint_names: list[str]
    joint_position: NDArray[np.float64]  # float64
    joint_velocity: NDArray[np.float64]  # float64
    state: NDArray[np.float64]  # float64


def make_payload(seed: int) -> Payload:
    """Deterministic message contents for `seed`, with special floats in `actions`."""
    rng = np.random.default_rng(seed)
    k, h, a, m, latent_dim = 4, 8, 7, 3, 16
    actions = rng.standard_normal((k, h, a)).astype(np.float32)
    actions.reshape(-1)[: SPECIAL_F32_BITS.size] = SPECIAL_F32_BITS.view(np.float32)
    joint_names = [f"joint_{i + 1}" for i in range(6)] + ["gripper"]
    joint_position = rng.uniform(-np.pi, np.pi, a)
    return Payload(
        stamp_sec=1_767_225_600,
        stamp_nanosec=123_456_789,
        frame_id="base_link",
        action_names=joint_names,
        actions=actions,
        obs_latent=rng.standard_normal(latent_dim).astype(np.float32),
        future_latents=rng.standard_normal((k, m, latent_dim)).astype(np.float32),
        policy_scores=rng.standard_normal(k).astype(np.float32),
        seed=2**64 - 1 - seed,
        instruction="put the red cube in the blue bowl — ünïcödé ok",
        policy_id="flare_tiny@0123abcd/onnxruntime",
        chosen=2,
        scores=rng.standard_normal(k).astype(np.float32),
        progress=rng.uniform(0.0, 1.0, k).astype(np.float32),
        failure_prob=rng.uniform(0.0, 1.0, k).astype(np.float32),
        stage_names=["decode", "wm_rollout", "score", "total"],
        stage_ms=rng.uniform(0.1, 5.0, 4).astype(np.float32),
        camera_names=["front", "wrist_depth"],
        images=[
            rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
            rng.integers(0, 2**16, (4, 5), dtype=np.uint16),
        ],
        joint_names=joint_names,
        joint_position=joint_position,
        joint_velocity=rng.standard_normal(a),
        state=np.concatenate([joint_position, [0.04]]),
    )


def f32(values: NDArray[Any]) -> array.array[float]:
    """float32 array -> the array.array('f') a float32[] field holds, bit for bit."""
    return array.array("f", np.ascontiguousarray(values, dtype=np.float32).tobytes())


def f64(values: NDArray[Any]) -> array.array[float]:
    """float64 array -> the array.array('d') a float64[] field holds, bit for bit."""
    return array.array("d", np.ascontiguousarray(values, dtype=np.float64).tobytes())


def header(p: Payload) -> Header:
    """Header carrying the observation stamp."""
    msg = Header(frame_id=p.frame_id)
    msg.stamp.sec = p.stamp_sec
    msg.stamp.nanosec = p.stamp_nanosec
    return msg


def image(p: Payload, index: int) -> Image:
    """Little-endian sensor_msgs/Image of payload image `index` (rgb8 or 16UC1)."""
    pixels = p.images[index]
    msg = Image(header=header(p), height=pixels.shape[0], width=pixels.shape[1])
    msg.header.frame_id = f"{p.camera_names[index]}_optical_frame"
    msg.encoding = "rgb8" if pixels.dtype == np.uint8 else "16UC1"
    msg.is_bigendian = 0
    msg.step = pixels.shape[1] * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
    msg.data = array.array("B", pixels.astype(pixels.dtype.newbyteorder("<")).tobytes())
    return msg


def action_candidates(p: Payload) -> ActionCandidates:
    """ActionCandidates with per-candidate (K, M, latent_dim) future latents."""
    k, h, a = p.actions.shape
    return ActionCandidates(
        header=header(p),
        k=k,
        h=h,
        a=a,
        action_names=p.action_names,
        actions=f32(p.actions),
        obs_latent=f32(p.obs_latent),
        m=p.future_latents.shape[1],
        latent_dim=p.future_latents.shape[2],
        future_latents=f32(p.future_latents),
        policy_scores=f32(p.policy_scores),
        seed=p.seed,
        instruction=p.instruction,
        policy_id=p.policy_id,
    )


def ranking_result(p: Payload) -> RankingResult:
    """RankingResult of a degraded GPC-RANK run."""
    return RankingResult(
        header=header(p),
        chosen=p.chosen,
        scores=f32(p.scores),
        progress=f32(p.progress),
        failure_prob=f32(p.failure_prob),
        stage_names=p.stage_names,
        stage_ms=f32(p.stage_ms),
        backend="onnxruntime",
        ranker="gpc_rank",
        degraded=True,
    )


def observation(p: Payload) -> Observation:
    """Observation with two cameras (rgb8 + 16UC1) and a joint state."""
    joint_state = JointState(header=header(p), name=p.joint_names)
    joint_state.position = f64(p.joint_position)
    joint_state.velocity = f64(p.joint_velocity)
    return Observation(
        header=header(p),
        images=[image(p, i) for i in range(len(p.images))],
        camera_names=p.camera_names,
        joint_state=joint_state,
        state=f64(p.state),
    )


def main() -> None:
    """Publish the three messages once (latched), then spin for --linger seconds and exit."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--linger", type=float, default=60.0, help="seconds to stay alive")
    args = parser.parse_args()
    payload = make_payload(args.seed)
    rclpy.init()
    try:
        node = rclpy.create_node("wm_vla_interfaces_test_publisher")
        for msg_type, topic, msg in (
            (ActionCandidates, TOPIC_CANDIDATES, action_candidates(payload)),
            (RankingResult, TOPIC_RANKING, ranking_result(payload)),
            (Observation, TOPIC_OBSERVATION, observation(payload)),
        ):
            node.create_publisher(msg_type, topic, LATCHED_QOS).publish(msg)
        deadline = time.monotonic() + args.linger
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.2)
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
