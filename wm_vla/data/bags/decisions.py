"""A bag -> the decision points a policy would have seen: aligned images + joint state + instruction, the recorded
command chunk that followed, the observation at t + H (realised future), and, for bags of our own stack, the
recorded candidates (seed, chunks, choice) to replay exactly.

Two passes keep memory bounded: stamps of every image first, then only the frames that are used are decoded.
Decision times: the stack's ActionCandidates stamps when recorded (exact replay), else reference-camera frames at
least `every_s` apart. Everything is as-of aligned on header stamps with bounded age; never a future message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transforms3d.euler import quat2euler

from wm_vla.data.bags.align import asof_indices
from wm_vla.data.bags.commands import CommandTrack, command_chunks
from wm_vla.data.bags.episodes import Episode, by_gaps, by_markers, by_ranges, marker_is_end
from wm_vla.data.bags.images import image_to_rgb
from wm_vla.data.bags.reader import BagIssues, BagReader, Record
from wm_vla.data.bags.topics import TopicMap
from wm_vla.data.errors import BagAlignmentError, BagMessageError
from wm_vla.models.preprocess import resize_uint8

log = logging.getLogger(__name__)
NS = 1_000_000_000
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class LoadConfig:
    cameras: tuple[str, ...]
    image_size: int
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    horizon: int
    fps: float
    every_s: float                       # spacing of decision points (ignored when the stack's decisions are recorded)
    max_age_ms: float = 200.0            # bounded age of every as-of sample
    ranges: list[tuple[float, float]] | None = None   # episodes as time ranges (s from bag start)
    gap_s: float | None = None           # or: split where the reference camera pauses longer than this
    max_decisions: int | None = None
    instruction: str | None = None       # used when the bag has no instruction topic


@dataclass
class DecisionPoint:
    index: int
    episode: int
    stamp_ns: int
    images: np.ndarray                   # (cams, 3, S, S) uint8 RGB
    state: np.ndarray                    # (state_dim,) float32
    instruction: str
    recorded: np.ndarray                 # (H, A) recorded command chunk, NaN where nothing was commanded
    future_images: np.ndarray | None     # (cams, 3, S, S) at t + H/fps, None when not in the bag (or episode)
    future_state: np.ndarray | None = None  # (state_dim,) at t + H/fps
    seed: int | None = None              # recorded by the stack: the noise seed of its candidates
    recorded_candidates: np.ndarray | None = None  # (K, H, A) from the stack's ActionCandidates
    recorded_chosen: int | None = None   # from the stack's RankingResult


@dataclass
class BagData:
    path: str
    decisions: list[DecisionPoint]
    episodes: list[Episode]
    issues: BagIssues
    topics: dict[str, str]               # role -> topic used
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    mode: str = "frames"                 # frames | stack


def _state(msg: Any, names: tuple[str, ...]) -> np.ndarray:
    """The profile's state vector from a JointState (positions by name) or an Odometry (x, y, yaw, vx, vy, wz)."""
    if hasattr(msg, "pose") and hasattr(msg, "twist"):  # nav_msgs/Odometry
        p, q, v = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
        yaw = quat2euler([q.w, q.x, q.y, q.z], "sxyz")[2]
        values = {"x": p.x, "y": p.y, "z": p.z, "yaw": yaw, "vx": v.linear.x, "vy": v.linear.y, "vz": v.linear.z,
                  "wz": v.angular.z}
        what = "odometry"
    else:
        values, what = dict(zip(msg.name, np.asarray(msg.position, float))), "joint_states"
    missing = [n for n in names if n not in values]
    if missing:
        raise BagMessageError(f"{what} lacks {missing} (has {list(values)})")
    return np.array([values[n] for n in names], np.float32)


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    return resize_uint8(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None], size)[0].numpy()


class _Loader:
    def __init__(self, reader: BagReader, topics: TopicMap, cfg: LoadConfig) -> None:
        self.r, self.t, self.cfg = reader, topics, cfg
        self.age = int(cfg.max_age_ms * 1e6)
        self.warnings: list[str] = []
        self.used: dict[str, str] = {}

    def warn(self, text: str) -> None:
        log.warning("%s", text)
        self.warnings.append(text)

    def optional(self, role: str, topic: str | None) -> list[Record]:
        if topic is None or topic not in self.r.topics:
            return []
        self.used[role] = topic
        return self.r.read(topic)

    def image_stamps(self) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
        """camera -> (topic, sorted stamps, bag-order index of each)."""
        topics = {}
        for cam in self.cfg.cameras:
            topic = self.r.resolve(self.t.cameras[cam], IMAGE_TYPES) or self.t.cameras[cam]
            topics[cam] = self.r.require(topic, f"camera '{cam}' image")
            self.used[f"camera.{cam}"] = topic
        per: dict[str, list[tuple[int, int]]] = {t: [] for t in topics.values()}
        for topic, i, rec in self.r.iter_records(per):
            if rec is not None:
                per[topic].append((rec.stamp_ns, i))
        out = {}
        for cam, topic in topics.items():
            pairs = per[topic]
            if not pairs:
                raise BagAlignmentError(f"camera '{cam}' topic {topic} has no decodable image")
            stamps = np.array([p[0] for p in pairs], np.int64)
            back = int(np.sum(np.diff(stamps) < 0))
            if back:
                self.r.issues.add("non_monotonic_stamps", f"{topic}: {back} stamp(s) earlier than their predecessor", back)
            order = np.argsort(stamps, kind="stable")
            out[cam] = (topic, stamps[order], np.array([p[1] for p in pairs])[order])
        return out

    def episodes(self, ref: np.ndarray) -> list[Episode]:
        if self.cfg.ranges:
            return by_ranges(self.cfg.ranges, self.r.start_ns)
        if self.t.marker and self.t.marker in self.r.topics:
            marks = self.optional("marker", self.t.marker)
            return by_markers([(m.stamp_ns, marker_is_end(m.msg)) for m in marks], int(ref[-1]))
        if self.t.marker:
            self.warn(f"marker topic {self.t.marker} not in the bag: one episode")
        if self.cfg.gap_s:
            return by_gaps(ref, self.cfg.gap_s)
        return [Episode(0, int(ref[0]), max(int(ref[-1]), self.r.end_ns) + 1)]

    def frame_decisions(self, ref: np.ndarray, episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray]:
        """Reference frames at least every_s apart inside each episode -> (stamps, episode index)."""
        times, eps = [], []
        step = int(self.cfg.every_s * NS)
        for ep in episodes:
            last = None
            for t in ref[ep.contains(ref)]:
                if last is None or t - last >= step - self.age // 10:
                    times.append(int(t))
                    eps.append(ep.index)
                    last = t
        return np.array(times, np.int64), np.array(eps, np.int64)


def load_decisions(path: str | Path, topics: TopicMap, cfg: LoadConfig) -> BagData:
    """Read a bag into decision points (see the module docstring); problems are counted, not fatal."""
    with BagReader(path) as reader:
        ld = _Loader(reader, topics, cfg)
        stack_obs = ld.optional("observation", topics.stack.get("observation"))
        stack_cand = ld.optional("candidates", topics.stack.get("candidates")) if stack_obs else []
        stack_rank = ld.optional("ranking", topics.stack.get("ranking")) if stack_cand else []
        cams = {} if stack_cand else ld.image_stamps()
        joints = [] if stack_cand else ld.optional("state", reader.require(topics.state, "robot state"))
        tracks = []
        for src in topics.commands:
            records = ld.optional(f"command:{src.interface}", src.topic)
            if records:
                tracks.append(CommandTrack(src, cfg.action_names, records, int(NS / cfg.fps)))
        if not tracks:
            ld.warn("no recorded commands (" + ", ".join(s.topic for s in topics.commands) + "): candidate-vs-operator "
                    "errors are not computed")
        instructions = ld.optional("instruction", topics.instruction)
        if not instructions and cfg.instruction is None and not stack_obs:
            ld.warn(f"no instruction topic {topics.instruction} and no --instruction: the policy gets an empty one")

        if stack_cand:
            data = _stack_points(ld, stack_obs, stack_cand, stack_rank)
            episodes = [Episode(0, data[0][0], data[-1][0] + 1)] if data else []
            times = np.array([d[0] for d in data], np.int64)
            eps = np.zeros(len(times), np.int64)
        else:
            ref = cams[cfg.cameras[0]][1]
            episodes = ld.episodes(ref)
            times, eps = ld.frame_decisions(ref, episodes)
        if cfg.max_decisions is not None:
            times, eps = times[: cfg.max_decisions], eps[: cfg.max_decisions]
        if len(times) == 0:
            raise BagAlignmentError(f"{path}: no decision point (episodes: {len(episodes)})")
        ends = np.array([episodes[e].end_ns for e in eps], np.int64) if episodes and not stack_cand else None
        recorded = (command_chunks(tracks, times, cfg.horizon, len(cfg.action_names), cfg.fps, ends) if tracks
                    else np.full((len(times), cfg.horizon, len(cfg.action_names)), np.nan))
        ins_stamps = np.array([r.stamp_ns for r in instructions], np.int64)
        ins_idx = asof_indices(ins_stamps, times, np.iinfo(np.int64).max // 2)

        def instruction(i: int) -> str:
            return str(instructions[ins_idx[i]].msg.data) if ins_idx[i] >= 0 else (cfg.instruction or "")

        if stack_cand:
            points = [DecisionPoint(i, 0, int(t), obs_images, state, text or instruction(i), recorded[i], None,
                                    seed=seed, recorded_candidates=cand, recorded_chosen=chosen)
                      for i, (t, obs_images, state, text, seed, cand, chosen) in enumerate(data[: len(times)])]
            _stack_futures(ld, stack_obs, points)
        else:
            points = _frame_points(ld, cams, joints, times, eps, recorded, instruction, ends)
        if not points:
            raise BagAlignmentError(f"{path}: none of {len(times)} decision point(s) has usable images and state "
                                    f"(issues: {reader.issues.to_dict()})")
        duration = (reader.end_ns - reader.start_ns) / NS
        return BagData(str(path), points, episodes, reader.issues, ld.used, ld.warnings, duration,
                       "stack" if stack_cand else "frames")


def _frame_points(ld: _Loader, cams: dict[str, tuple[str, np.ndarray, np.ndarray]], joints: list[Record],
                  times: np.ndarray, eps: np.ndarray, recorded: np.ndarray, instruction: Any, ends: np.ndarray
                  ) -> list[DecisionPoint]:
    cfg, age = ld.cfg, ld.age
    future_t = times + int(round(cfg.horizon * NS / cfg.fps))
    idx = {cam: (asof_indices(st, times, age), np.where(future_t < ends, asof_indices(st, future_t, age), -1))
           for cam, (_, st, _) in cams.items()}
    js_stamps = np.array([r.stamp_ns for r in joints], np.int64)
    js_idx, js_fut = asof_indices(js_stamps, times, age), asof_indices(js_stamps, future_t, age)
    ok = (js_idx >= 0) & np.all([v[0] >= 0 for v in idx.values()], axis=0)
    if (~ok).sum():
        ld.r.issues.add("stale_observation", f"{int((~ok).sum())} decision point(s) without a camera frame and joint "
                        f"state within {cfg.max_age_ms:.0f} ms", int((~ok).sum()))
    # pass 2: decode only the frames used (now and at t + H)
    want: dict[str, dict[int, np.ndarray | None]] = {}
    for cam, (topic, _, order) in cams.items():
        now, fut = idx[cam]
        sel = {int(order[j]) for j in np.concatenate([now[ok], fut[ok]]) if j >= 0}
        want.setdefault(topic, {}).update({j: None for j in sel})
    for topic, i, rec in ld.r.iter_records(want, decode=lambda tp, i: i in want[tp]):
        if rec is not None:
            try:
                want[topic][i] = _resize(image_to_rgb(rec.msg), cfg.image_size)
            except BagMessageError as exc:
                ld.r.issues.add("bad_image", f"{topic} message {i}: {exc}")

    def frame(cam: str, j: int) -> np.ndarray | None:
        topic, _, order = cams[cam]
        return want[topic].get(int(order[j])) if j >= 0 else None

    points = []
    for n in np.flatnonzero(ok):
        now = [frame(cam, idx[cam][0][n]) for cam in cfg.cameras]
        if any(f is None for f in now):
            continue
        fut = [frame(cam, idx[cam][1][n]) for cam in cfg.cameras]
        try:
            state = _state(joints[js_idx[n]].msg, cfg.state_names)
            fut_state = _state(joints[js_fut[n]].msg, cfg.state_names) if js_fut[n] >= 0 else None
        except BagMessageError as exc:
            ld.r.issues.add("bad_state", str(exc))
            continue
        has_future = fut_state is not None and all(f is not None for f in fut)
        points.append(DecisionPoint(len(points), int(eps[n]), int(times[n]), np.stack(now), state, instruction(n),
                                    recorded[n], np.stack(fut) if has_future else None,
                                    fut_state if has_future else None))
    return points


def _stack_futures(ld: _Loader, obs: list[Record], points: list[DecisionPoint]) -> None:
    """The realised future of each recorded decision: the stack's Observation as of t + H (bounded age)."""
    cfg = ld.cfg
    stamps = np.array([r.stamp_ns for r in obs], np.int64)
    future = np.array([p.stamp_ns for p in points], np.int64) + int(round(cfg.horizon * NS / cfg.fps))
    for p, j in zip(points, asof_indices(stamps, future, ld.age)):
        if j < 0:
            continue
        o = obs[j].msg
        names = list(o.camera_names)
        if all(c in names for c in cfg.cameras):
            p.future_images = np.stack([_resize(image_to_rgb(o.images[names.index(c)]), cfg.image_size)
                                        for c in cfg.cameras])
            p.future_state = np.asarray(o.state, np.float32)


def _stack_points(ld: _Loader, obs: list[Record], cand: list[Record], rank: list[Record]) -> list[tuple]:
    """Our stack's recording: each ActionCandidates with the Observation of the same stamp (and its RankingResult)."""
    cfg = ld.cfg
    by_stamp = {r.stamp_ns: r.msg for r in obs}
    chosen = {r.stamp_ns: int(r.msg.chosen) for r in rank}
    out = []
    for c in cand:
        o = by_stamp.get(c.stamp_ns)
        if o is None:
            ld.r.issues.add("candidates_without_observation", f"candidates at {c.stamp_ns} ns")
            continue
        names = list(o.camera_names)
        try:
            images = np.stack([_resize(image_to_rgb(o.images[names.index(cam)]), cfg.image_size)
                               for cam in cfg.cameras])
        except ValueError:
            ld.r.issues.add("observation_camera_missing", f"observation has cameras {names}, policy needs {cfg.cameras}")
            continue
        m = c.msg
        actions = np.asarray(m.actions, np.float32).reshape(int(m.k), int(m.h), int(m.a))
        out.append((c.stamp_ns, images, np.asarray(o.state, np.float32), str(m.instruction), int(m.seed), actions,
                    chosen.get(c.stamp_ns)))
    return out
