"""Sim episodes as a realistic robot bag: the MuJoCo arm world driven by its scripted expert, recorded like a real
arm with a RealSense: bgr8 images on realsense2_camera topics, /joint_states, JTC trajectories + gripper commands,
the instruction, and an episode marker. Episodes are separated by a pause (no messages) of `gap_s`.

Per control step k (observation stamp t_k): joint_states at t_k + 1 ms, images at t_k + 2 ms (header stamp t_k),
the commands for that step at t_k + `latency_ms` (header stamp 0 = now), as a live stack would send them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wm_vla.data.bags import messages as m
from wm_vla.data.bags.topics import STACK_TOPICS, TopicMap
from wm_vla.data.bags.writer import BagRecorder, RecorderConfig

NS = 1_000_000_000
MARKER_TOPIC = "/wm_vla/episode"
Sink = Callable[[str, str, Any, int], None]   # (topic, msgtype, message, log time ns)


@dataclass
class SimBagConfig:
    out: Path
    world: str = "arm"
    episodes: int = 4
    seed: int = 0
    family: str | None = "touch"
    image_size: int = 96
    encoding: str = "bgr8"
    storage: str = "mcap"
    gap_s: float = 2.0
    latency_ms: float = 30.0
    start_ns: int = 1_700_000_000 * NS
    progress: bool = False


class PolicyDriver:
    """Drive the sim with a decision pipeline (policy + GPC-RANK) and record what our stack records: the
    Observation, ActionCandidates (with the noise seed) and RankingResult of every decision."""

    def __init__(self, pipeline: Any, k: int, exec_horizon: int, seed: int = 0, policy_id: str = "") -> None:
        self.pipeline, self.k, self.exec_h, self.seed, self.policy_id = pipeline, k, exec_horizon, seed, policy_id
        self.decisions = 0

    def __call__(self, obs: Any, t: int, world: Any, sink: Sink) -> np.ndarray:
        from wm_vla.runtime.spec import candidate_noise

        spec = self.pipeline.backend.spec
        seed = self.seed * 1_000_003 + self.decisions
        self.decisions += 1
        images = np.stack([obs.images[c].transpose(2, 0, 1) for c in spec.cameras])[None].astype(np.float32) / 255
        d = self.pipeline.decide(images, obs.state[None].astype(np.float32), obs.instruction,
                                 candidate_noise(spec.horizon, spec.action_dim, self.k, seed))
        names = world.profile.state.names
        sink(STACK_TOPICS["observation"], "wm_vla_interfaces/msg/Observation",
             m.observation({c: obs.images[c] for c in spec.cameras}, obs.state, names, t), t + 3_000_000)
        sink(STACK_TOPICS["candidates"], "wm_vla_interfaces/msg/ActionCandidates",
             m.action_candidates(d.actions, d.obs_latent, d.future_latents, world.profile.action.names, seed,
                                 obs.instruction, t, self.policy_id), t + 20_000_000)
        r = d.ranking
        zeros = np.zeros(self.k)
        sink(STACK_TOPICS["ranking"], "wm_vla_interfaces/msg/RankingResult",
             m.ranking_result(d.chosen, r.scores if r else zeros, r.progress if r else zeros,
                              r.failure_prob if r else zeros, d.stage_ms, t, ranker=r.ranker if r else "passthrough"),
             t + 25_000_000)
        return d.actions[d.chosen, : self.exec_h]


def write_sim_episodes(cfg: SimBagConfig, sink: Sink, driver: PolicyDriver | None = None) -> dict[str, Any]:
    """Run `cfg.episodes` episodes (the scripted expert, or `driver`) and hand every message to `sink`."""
    from wm_vla.sim.registry import make_expert, make_world

    world = make_world(cfg.world, image_size=cfg.image_size)
    if world.profile.action.kind != "joint_position":
        raise ValueError(f"sim bags are recorded for joint-position arms, not {world.name}")
    prof = world.profile
    topics = TopicMap.from_profile(prof, world.camera_names)
    period = int(round(NS / world.fps))
    traj = next(c for c in topics.commands if c.interface == "joint_trajectory")
    grip = next((c for c in topics.commands if c.interface == "position_commands"), None)
    js_names = list(prof.state.names) + [j for j in prof.gripper_joints if j not in prof.state.names]
    t = cfg.start_ns
    summary: dict[str, Any] = {"episodes": [], "steps": 0, "topics": {"cameras": dict(topics.cameras),
                                                                       "joint_states": topics.joint_states}}
    for ep in tqdm(range(cfg.episodes), desc="sim bag", unit="ep", disable=not cfg.progress):
        seed = cfg.seed + ep
        obs = world.reset(seed, family=cfg.family)
        expert = make_expert(world, np.random.default_rng([seed, 1]))
        pending: list[np.ndarray] = []
        sink(MARKER_TOPIC, "std_msgs/msg/String", m.string("start"), t - 20_000_000)
        sink(topics.instruction, "std_msgs/msg/String", m.string(obs.instruction), t - 10_000_000)
        steps, result = 0, None
        while True:
            state = np.asarray(obs.state, float)
            grip_pos = state[list(prof.state.names).index(prof.gripper_joints[0])] if prof.gripper_joints else 0.0
            position = np.concatenate([state, np.full(len(js_names) - len(state), grip_pos)])
            sink(topics.joint_states, "sensor_msgs/msg/JointState", m.joint_state(js_names, position, t), t + 1_000_000)
            for cam, topic in topics.cameras.items():
                cam_spec = next((c for c in prof.cameras if c.name == cam), None)
                frame = cam_spec.frame if cam_spec else f"{cam}_camera_optical_frame"
                sink(topic, "sensor_msgs/msg/Image", m.image(obs.images[cam], t, frame, cfg.encoding), t + 2_000_000)
            if not pending:
                pending = list(driver(obs, t, world, sink)) if driver is not None else [expert.act(obs)]
            action = world.check_action(pending.pop(0))
            sent = t + int(cfg.latency_ms * 1e6)
            arm = [prof.action.names.index(j) for j in traj.joints]
            sink(traj.topic, "trajectory_msgs/msg/JointTrajectory",
                 m.joint_trajectory(traj.joints, action[arm][None], period), sent)
            if grip is not None:
                g = action[prof.action.names.index(grip.joints[0])]
                sink(grip.topic, "std_msgs/msg/Float64MultiArray", m.float64_array(np.full(len(grip.joints), g)), sent)
            result = world.step(action)
            steps += 1
            t += period
            obs = result.observation
            if result.done:
                break
        sink(MARKER_TOPIC, "std_msgs/msg/String", m.string("end"), t)
        summary["episodes"].append({"seed": seed, "instruction": obs.instruction, "steps": steps,
                                    "success": bool(result.success), "event": result.event or ""})
        summary["steps"] += steps
        t += int(cfg.gap_s * NS)
    world.close()
    summary["duration_s"] = (t - cfg.start_ns) / NS
    return summary


def record_sim_bag(cfg: SimBagConfig, driver: PolicyDriver | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the sim episodes with rosbags into `cfg.out` (one rosbag2 directory); returns its path and summary."""
    with BagRecorder(RecorderConfig(Path(cfg.out), name="sim", storage=cfg.storage)) as rec:
        summary = write_sim_episodes(cfg, rec.write, driver)
    return rec.parts[0], summary
