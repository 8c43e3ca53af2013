"""Episode recorder (ROS-free): streams of camera frames, robot state and commanded actions -> LeRobot frames.

Streams arrive at their own rates with their own stamps; `tick(t)` (called at the dataset fps) pairs each stream
as of `t` (data/sync.py: the newest sample at or before t within `max_age_s`) and adds one frame; a tick with a
missing or stale stream is dropped and counted by reason. The commanded action is taken as of `t + action_lead_s`
(the command sent right after the observation, as in lerobot's record loop). Episodes: idle -> start -> recording
-> stop (saved, crash-safe via DurableDataset) | discard | rerecord (discard + start).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wm_vla.data.durable import DurableDataset
from wm_vla.data.errors import EpisodeStateError, FrameError, MissingStreamError
from wm_vla.data.images import fit
from wm_vla.data.lerobot_io import as_bool, frame_features
from wm_vla.data.sync import AsOfBuffer

IDLE, RECORDING = "idle", "recording"
INTERVENTION = "intervention"


@dataclass
class RecorderConfig:
    root: Path
    fps: int
    cameras: tuple[str, ...]
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    robot_type: str
    image_size: int = 96
    task: str = ""                   # default task string (the latest instruction overrides it)
    max_age_s: float = 0.2           # as-of pairing bound for every stream
    action_lead_s: float = 0.0
    use_videos: bool = False
    repo_id: str = ""
    min_free_mb: float = 0.0
    image_writer_threads: int = 2

    def features(self) -> dict[str, dict[str, Any]]:
        feats = frame_features(self.cameras, self.image_size, self.state_names, self.action_names, self.use_videos)
        feats[INTERVENTION] = {"dtype": "bool", "shape": (1,), "names": None}
        return feats


@dataclass
class EpisodeStats:
    frames: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    started: float = 0.0             # wall clock (s)
    interventions: int = 0

    def fps(self, now: float | None = None) -> float:
        elapsed = (now or time.monotonic()) - self.started
        return self.frames / elapsed if elapsed > 0 else 0.0


class EpisodeRecorder:
    """Stream buffers + the episode state machine over a DurableDataset (created or resumed at `cfg.root`)."""

    def __init__(self, cfg: RecorderConfig) -> None:
        if cfg.fps <= 0 or not cfg.cameras or not cfg.action_names or not cfg.state_names:
            raise MissingStreamError(f"recorder needs fps > 0, cameras, state and action names; got fps={cfg.fps}, "
                                     f"cameras={cfg.cameras}, state={cfg.state_names}, action={cfg.action_names}")
        self.cfg = cfg
        self.dataset = DurableDataset(Path(cfg.root), cfg.repo_id or f"local/{Path(cfg.root).name}", cfg.fps,
                                      cfg.features(), cfg.robot_type, cfg.use_videos, cfg.image_writer_threads,
                                      cfg.min_free_mb)
        self.images = {c: AsOfBuffer[np.ndarray](cfg.max_age_s, capacity=32) for c in cfg.cameras}
        self.state = AsOfBuffer[np.ndarray](cfg.max_age_s, capacity=256)
        self.action = AsOfBuffer[tuple[np.ndarray, bool]](cfg.max_age_s, capacity=256)
        self.task = cfg.task
        self.status = IDLE
        self.episode = EpisodeStats()
        self.saved: list[int] = []   # frame counts of the episodes saved in this session
        self.total_dropped: Counter[str] = Counter()

    # ----- streams -----
    def add_image(self, camera: str, stamp: float, rgb: np.ndarray) -> None:
        if camera not in self.images:
            raise MissingStreamError(f"unknown camera {camera!r} (recording {list(self.images)})")
        self.images[camera].add(stamp, fit(rgb, self.cfg.image_size))

    def add_state(self, stamp: float, state: np.ndarray) -> None:
        self.state.add(stamp, self._vector(state, self.cfg.state_names, "state"))

    def add_action(self, stamp: float, action: np.ndarray, intervention: bool = False) -> None:
        self.action.add(stamp, (self._vector(action, self.cfg.action_names, "action"), bool(intervention)))

    def set_task(self, task: str) -> None:
        self.task = task

    @staticmethod
    def _vector(values: np.ndarray, names: tuple[str, ...], what: str) -> np.ndarray:
        v = np.asarray(values, np.float32).reshape(-1)
        if v.shape != (len(names),):
            raise MissingStreamError(f"{what} has {v.size} values, the dataset's {what} has {len(names)} ({list(names)})")
        if not np.all(np.isfinite(v)):
            raise FrameError("non_finite", f"{what} contains NaN/inf")
        return v

    # ----- episodes -----
    @property
    def episodes(self) -> int:
        return self.dataset.episodes

    def missing_streams(self) -> list[str]:
        """Streams that have never delivered a sample (a camera topic that is not published, ...)."""
        out = [f"camera {c}" for c, buf in self.images.items() if buf.latest() is None]
        out += [name for name, buf in (("state", self.state), ("action", self.action)) if buf.latest() is None]
        return out

    def start(self) -> None:
        if self.status == RECORDING:
            raise EpisodeStateError(f"episode {self.episodes} is already recording (stop, discard or rerecord it)")
        missing = self.missing_streams()
        if missing:
            raise MissingStreamError(f"cannot start an episode: no data yet from {', '.join(missing)}")
        self.dataset.check_space()
        self.status, self.episode = RECORDING, EpisodeStats(started=time.monotonic())

    def tick(self, t: float) -> bool:
        """Add the frame as of `t` while recording; False (and counted) when a stream is missing or stale."""
        if self.status != RECORDING:
            return False
        try:
            frame = self._frame(t)
        except FrameError as exc:
            self.episode.dropped[exc.reason] += 1
            self.total_dropped[exc.reason] += 1
            return False
        self.dataset.add_frame(frame)
        self.episode.frames += 1
        return True

    def _frame(self, t: float) -> dict[str, Any]:
        frame: dict[str, Any] = {}
        for cam, buf in self.images.items():
            try:
                frame[f"observation.images.{cam}"] = buf.as_of(t).value
            except FrameError as exc:
                raise FrameError(f"camera_{cam}_{exc.reason.removesuffix('_state')}", f"camera {cam}: {exc}") from exc
        frame["observation.state"] = self.state.as_of(t).value
        try:
            action, intervention = self.action.as_of(t + self.cfg.action_lead_s).value
        except FrameError as exc:
            raise FrameError(exc.reason.replace("state", "action"), f"action: {exc}") from exc
        frame["action"] = action
        frame[INTERVENTION] = as_bool(intervention)
        self.episode.interventions += int(intervention)
        for label in ("next.success", "next.failure", "next.done", "episode_success"):
            frame[label] = as_bool(False)
        frame["task"] = self.task
        return frame

    def stop(self, success: bool | None = None) -> int:
        """Save the episode (crash-safe); returns its frame count. `success` (e.g. from the sim's task check) labels
        the episode: `episode_success` on every frame, `next.done` and `next.success`/`next.failure` on the last."""
        if self.status != RECORDING:
            raise EpisodeStateError("no episode is recording")
        self.status = IDLE
        if self.episode.frames == 0:
            self.dataset.discard_episode()
            raise MissingStreamError(f"episode has no frame (dropped: {dict(self.episode.dropped)}); nothing saved")
        if success is not None:
            self.dataset.label_episode(bool(success))
        n = self.dataset.save_episode()
        self.saved.append(n)
        return n

    def discard(self) -> int:
        """Drop the recording episode; returns the frames dropped."""
        if self.status != RECORDING:
            raise EpisodeStateError("no episode is recording")
        self.status = IDLE
        n = self.episode.frames
        self.dataset.discard_episode()
        return n

    def rerecord(self) -> int:
        """Discard the current episode and start it again."""
        n = self.discard()
        self.start()
        return n

    def stats(self) -> dict[str, Any]:
        return {"status": self.status, "episodes": self.episodes, "frames": self.dataset.frames,
                "episode_frames": self.episode.frames,
                "fps": round(self.episode.fps(), 2) if self.status == RECORDING else 0.0,
                "dropped": sum(self.episode.dropped.values()), "dropped_total": sum(self.total_dropped.values()),
                **{f"dropped_{k}": v for k, v in self.total_dropped.items()}}

    def close(self) -> None:
        """Drop an unsaved episode (it is not complete) and release the writer."""
        self.status = IDLE
        self.dataset.close()
