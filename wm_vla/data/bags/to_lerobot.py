"""Convert a ROS 2 bag recorded elsewhere (mcap / sqlite3) into a LeRobot v3 dataset through lerobot's API.

The existing bag reader does the work: per-profile topic mapping, Image/CompressedImage decoding, episode splits
(time ranges, pauses, marker topic) and as-of alignment. Frames are taken every 1/fps on the first camera's time
line; the action of a frame is the command in effect over its slot (JTC trajectories interpolated, forward/gripper
arrays held, cmd_vel). Frames without a commanded action are dropped and counted. The dataset is written with the
crash-safe DurableDataset (an existing dataset with the same features is appended to).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wm_vla.data.bags.decisions import LoadConfig, load_decisions
from wm_vla.data.bags.episodes import parse_ranges
from wm_vla.data.bags.topics import TopicMap
from wm_vla.data.durable import DurableDataset
from wm_vla.data.lerobot_io import as_bool
from wm_vla.data.recorder import INTERVENTION, RecorderConfig
from wm_vla.robots import load_profile


@dataclass
class ConvertConfig:
    bag: Path
    out: Path
    robot: str = "arm"
    cameras: tuple[str, ...] = ()         # default: the profile's cameras
    topics: dict[str, str] = field(default_factory=dict)   # overrides, e.g. {"wrist": "/cam/wrist/image_raw"}
    fps: int = 0                          # 0: the profile's policy rate
    image_size: int = 96
    max_age_ms: float | None = None       # as-of bound (default: the profile's max_obs_age_ms)
    episodes: str | None = None           # time ranges START:END,... (s from the bag start)
    gap_s: float = 1.0                    # or split at pauses longer than this
    marker: str | None = None             # or at a marker topic
    instruction: str | None = None        # task string when the bag has no instruction topic


def convert_bag(cfg: ConvertConfig) -> dict[str, Any]:
    """Write the bag's episodes; returns a summary with the throughput (frames per second of wall time)."""
    t0 = time.perf_counter()
    profile = load_profile(cfg.robot)
    cameras = cfg.cameras or tuple(c.name for c in profile.cameras)
    fps = int(cfg.fps or profile.policy_rate_hz)
    topics = TopicMap.from_profile(profile, cameras)
    if cfg.marker:
        topics = topics.with_overrides({"marker": cfg.marker})
    topics = topics.with_overrides(cfg.topics)
    load = LoadConfig(cameras, cfg.image_size, tuple(profile.state.names), tuple(profile.action.names), 1, fps,
                      1.0 / fps, cfg.max_age_ms if cfg.max_age_ms is not None else profile.max_obs_age_ms,
                      parse_ranges(cfg.episodes) if cfg.episodes else None,
                      None if cfg.episodes or cfg.marker else (cfg.gap_s or None), None, cfg.instruction)
    data = load_decisions(cfg.bag, topics, load)
    t1 = time.perf_counter()
    rec = RecorderConfig(Path(cfg.out), fps, cameras, tuple(profile.state.names), tuple(profile.action.names),
                         profile.name, cfg.image_size)
    ds = DurableDataset(Path(cfg.out), f"local/{Path(cfg.out).name}", fps, rec.features(), profile.name)
    dropped: Counter[str] = Counter()
    lengths = []
    try:
        episode = None
        for dp in data.decisions:
            if episode is not None and dp.episode != episode and ds.frames_in_episode:
                lengths.append(ds.save_episode())
            episode = dp.episode
            action = dp.recorded[0]
            if not np.all(np.isfinite(action)):
                dropped["no_command"] += 1
                continue
            frame: dict[str, Any] = {f"observation.images.{c}": np.ascontiguousarray(dp.images[i].transpose(1, 2, 0))
                                     for i, c in enumerate(cameras)}
            frame.update({"observation.state": dp.state.astype(np.float32), "action": action.astype(np.float32),
                          INTERVENTION: as_bool(False), "task": dp.instruction,
                          **{k: as_bool(False) for k in ("next.success", "next.failure", "next.done",
                                                         "episode_success")}})
            ds.add_frame(frame)
        if ds.frames_in_episode:
            lengths.append(ds.save_episode())
    finally:
        ds.close()
    t2 = time.perf_counter()
    frames = sum(lengths)
    return {"bag": str(cfg.bag), "out": str(cfg.out), "episodes": len(lengths), "frames": frames,
            "episode_lengths": lengths, "dataset_episodes": ds.episodes, "fps": fps, "cameras": list(cameras),
            "dropped": dict(dropped), "bag_issues": data.issues.to_dict(), "warnings": data.warnings,
            "topics": data.topics, "bag_duration_s": round(data.duration_s, 3), "read_s": round(t1 - t0, 3),
            "write_s": round(t2 - t1, 3), "frames_per_second": round(frames / max(t2 - t0, 1e-9), 1)}
