"""Child process of the recorder crash / disk-full tests: records synthetic episodes with EpisodeRecorder, then exits,
or kills itself with SIGKILL mid-episode / inside the commit, or stops at the first DiskFullError. Prints JSON."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import numpy as np

from wm_vla.data.errors import DiskFullError
from wm_vla.data.recorder import EpisodeRecorder, RecorderConfig

CAMERAS, STATE, ACTION = ("front", "wrist"), ("j0", "j1", "j2"), ("j0", "j1", "j2", "grip")


def config(root: Path, image_size: int = 32, action: tuple[str, ...] = ACTION) -> RecorderConfig:
    return RecorderConfig(Path(root), fps=10, cameras=CAMERAS, state_names=STATE, action_names=action,
                          robot_type="test_arm", image_size=image_size, task="pick the cube", max_age_s=0.15)


def feed(rec: EpisodeRecorder, t: float, rng: np.random.Generator, size: int) -> None:
    for cam in CAMERAS:
        rec.add_image(cam, t, rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    rec.add_state(t, np.full(len(STATE), t))
    rec.add_action(t, np.full(len(rec.cfg.action_names), t), intervention=False)


def episode(rec: EpisodeRecorder, t: float, frames: int, rng: np.random.Generator, size: int) -> float:
    feed(rec, t, rng, size)
    rec.start()
    for _ in range(frames):
        t += 0.1
        feed(rec, t, rng, size)
        rec.tick(t)
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--crash", choices=("none", "mid_episode", "in_commit"), default="none")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rec = EpisodeRecorder(config(Path(args.root), args.image_size))
    out = {"resumed_at": rec.episodes, "saved": [], "error": None}
    t = 100.0 * rec.episodes
    try:
        for _ in range(args.episodes):
            t = episode(rec, t, args.frames, rng, args.image_size)
            out["saved"].append(rec.stop())
    except DiskFullError as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out), flush=True)
    if args.crash == "mid_episode":
        episode(rec, t, args.frames // 2, rng, args.image_size)
        os.kill(os.getpid(), signal.SIGKILL)
    if args.crash == "in_commit":  # lerobot has written and closed the episode's files; the commit record has not
        rec.dataset.commit = lambda: os.kill(os.getpid(), signal.SIGKILL)  # type: ignore[method-assign]
        episode(rec, t, args.frames, rng, args.image_size)
        rec.stop()
    rec.close()


if __name__ == "__main__":
    main()
