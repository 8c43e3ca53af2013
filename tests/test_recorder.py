"""Episode recorder over lerobot's LeRobotDataset API: as-of resampling, episode state machine, crash safety (kill -9
mid-episode and inside the commit), resume, action-dim mismatch, missing camera, disk full on a real tmpfs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recorder_child import ACTION, CAMERAS, config, episode, feed
from wm_vla.data.errors import DatasetMismatchError, EpisodeStateError, MissingStreamError
from wm_vla.data.lerobot_io import load_dataset
from wm_vla.data.recorder import EpisodeRecorder

CHILD = Path(__file__).with_name("recorder_child.py")


def child(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parents[1]), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, env=env, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


def episode_lengths(root: Path) -> list[int]:
    ds = load_dataset(root, delta_timestamps={"action": [0.0, 0.1, 0.2], "observation.state": [-0.1, 0.0]})
    item = ds[len(ds) - 1]
    assert item["action"].shape == (3, len(ACTION)) and item["observation.state"].shape == (2, 3)
    ends = np.asarray(ds.meta.episodes["length"])
    return [int(n) for n in ends]


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_resampled_frames_episode_controls_and_lerobot_load(tmp_path: Path) -> None:
    rec = EpisodeRecorder(config(tmp_path / "ds"))
    rng = np.random.default_rng(1)
    with pytest.raises(MissingStreamError, match="camera front"):  # nothing published yet
        rec.start()
    with pytest.raises(EpisodeStateError):
        rec.stop()
    # camera at 30 Hz, state and action at 50 Hz (action value = its stamp), dataset at 10 Hz
    t, frames = 0.0, 0
    for cam in CAMERAS:
        rec.add_image(cam, 0.0, rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    rec.add_state(0.0, np.zeros(3))
    rec.add_action(0.0, np.zeros(4))
    rec.start()
    for k in range(1, 151):  # 3 s at 50 Hz
        t = k * 0.02
        rec.add_state(t, np.full(3, t))
        rec.add_action(t, np.full(4, t), intervention=t > 2.0)
        if k % 5 == 0 or k % 3 == 0:  # a 'camera' stamp roughly every 33 ms
            for cam in CAMERAS:
                rec.add_image(cam, t, rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
        if k % 5 == 0:
            frames += rec.tick(t - 0.01)  # as of 10 ms ago: the newest samples at or before it
    assert frames == 30 and rec.stats()["episode_frames"] == 30
    assert rec.stop() == 30
    t = episode(rec, 10.0, 8, rng, 32)
    assert rec.discard() == 8
    t = episode(rec, t, 5, rng, 32)
    assert rec.rerecord() == 5 and rec.status == "recording"
    for _ in range(6):
        t += 0.1
        feed(rec, t, rng, 32)
        rec.tick(t)
    assert rec.stop(success=True) == 6
    rec.close()
    assert episode_lengths(tmp_path / "ds") == [30, 6]
    ds = load_dataset(tmp_path / "ds")
    first = np.stack([ds[i]["action"].numpy() for i in range(30)])
    stamps = first[:, 0]
    ticks = np.arange(1, 31) * 0.1 - 0.01
    np.testing.assert_allclose(stamps, np.floor(ticks / 0.02 + 1e-6) * 0.02, atol=1e-5)  # as-of, never later
    assert [bool(ds[i]["intervention"]) for i in (0, 29)] == [False, True]
    assert ds[0]["task"] == "pick the cube" and ds[0]["observation.images.front"].shape == (3, 32, 32)
    assert len(list((tmp_path / "ds" / "data").rglob("*.parquet"))) == 2  # one file set per episode
    labels = {k: np.asarray(ds.hf_dataset.with_format(None)[k]).ravel() for k in ("episode_success", "next.done",
                                                                                   "next.success", "next.failure")}
    assert not labels["episode_success"][:30].any() and labels["episode_success"][30:].all()  # unlabelled, success
    assert labels["next.done"].nonzero()[0].tolist() == [35] and labels["next.success"].nonzero()[0].tolist() == [35]
    assert not labels["next.failure"].any()


def test_stale_stream_drops_frames_by_reason(tmp_path: Path) -> None:
    rec = EpisodeRecorder(config(tmp_path / "ds"))
    rng = np.random.default_rng(2)
    feed(rec, 0.0, rng, 32)
    rec.start()
    assert rec.tick(0.05)
    rec.add_state(1.0, np.ones(3))
    rec.add_action(1.0, np.ones(4))
    assert not rec.tick(1.0)  # the cameras stopped 1 s ago (max age 150 ms)
    assert rec.stats()["dropped_camera_front_stale"] == 1
    with pytest.raises(MissingStreamError, match="action has 5 values"):
        rec.add_action(1.1, np.ones(5))
    rec.close()


def test_kill9_mid_episode_keeps_saved_episodes_and_next_run_appends(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    proc = child("--root", str(root), "--episodes", "3", "--frames", "12", "--crash", "mid_episode", check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[0])["saved"] == [12, 12, 12]
    assert (root / "images").is_dir()                 # the killed episode's temporary frames are there ...
    assert episode_lengths(root) == [12, 12, 12]      # ... and lerobot loads the saved episodes as they were
    out = json.loads(child("--root", str(root), "--episodes", "2", "--frames", "7").stdout)
    assert out["resumed_at"] == 3 and out["saved"] == [7, 7]
    assert episode_lengths(root) == [12, 12, 12, 7, 7]
    assert not [p for p in (root / "images").rglob("*") if p.is_file()]  # no stale frames of the killed episode


def test_kill9_inside_the_commit_rolls_back_to_the_last_commit(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    proc = child("--root", str(root), "--episodes", "2", "--frames", "9", "--crash", "in_commit", check=False)
    assert proc.returncode == -signal.SIGKILL
    assert len(list((root / "data").rglob("*.parquet"))) == 3  # the third episode's files, never committed
    out = json.loads(child("--root", str(root), "--episodes", "1", "--frames", "4").stdout)
    assert out["resumed_at"] == 2
    assert episode_lengths(root) == [9, 9, 4]


def test_action_dim_mismatch_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    child("--root", str(root), "--episodes", "1", "--frames", "5")
    before = tree_digest(root)
    with pytest.raises(DatasetMismatchError, match=r"action: dataset has float32 \(4,\), recorder gives float32 \(5,\)"):
        EpisodeRecorder(config(root, action=(*ACTION, "extra")))
    with pytest.raises(DatasetMismatchError, match="observation.images.front"):
        EpisodeRecorder(config(root, image_size=48))
    assert tree_digest(root) == before
    assert episode_lengths(root) == [5]


def test_existing_non_dataset_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("keep me")
    from wm_vla.data.errors import DatasetExistsError

    with pytest.raises(DatasetExistsError):
        EpisodeRecorder(config(tmp_path / "ds"))
    assert (tmp_path / "ds" / "notes.txt").read_text() == "keep me"


def can_unshare_mounts() -> bool:
    """Whether `unshare -rm` (user + mount namespaces) works here: a private tmpfs without root."""
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-rm", "true"],
                                                                   capture_output=True).returncode == 0


@pytest.mark.skipif(not can_unshare_mounts(), reason="unshare -rm (user + mount namespaces) is not available: "
                    "no tmpfs without root")
def test_disk_full_on_a_tiny_tmpfs_keeps_saved_episodes(tmp_path: Path) -> None:
    """A real 2 MB tmpfs (mounted in a private user+mount namespace): record until the disk is full."""
    mnt, copy = tmp_path / "mnt", tmp_path / "copy"
    mnt.mkdir()
    env_py = f"PYTHONPATH={CHILD.parents[1]} OMP_NUM_THREADS=1"
    script = (f"mount -t tmpfs -o size=2m tmpfs {mnt} && {env_py} {sys.executable} {CHILD} --root {mnt}/ds "
              f"--episodes 20 --frames 12 --image-size 96; rc=$?; cp -a {mnt}/ds {copy}; exit $rc")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"] and out["error"].startswith("DiskFullError") and "intact" in out["error"]
    saved = out["saved"]
    assert 1 <= len(saved) < 20
    assert episode_lengths(copy) == saved  # every episode saved before the disk filled loads, frame counts match


def test_video_episodes_resume_into_new_files_and_load(tmp_path: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path / "ds"
    rng = np.random.default_rng(3)
    t = 0.0
    for run, n_episodes in enumerate((2, 1)):  # a second session appends to the video dataset
        cfg = config(root)
        cfg.use_videos = True
        rec = EpisodeRecorder(cfg)
        assert rec.episodes == 2 * run
        for _ in range(n_episodes):
            t = episode(rec, t, 6, rng, 32)
            assert rec.stop() == 6
        rec.close()
    assert len(list((root / "videos" / "observation.images.front").rglob("*.mp4"))) == 3  # one file per episode
    ds = LeRobotDataset("local/ds", root=root, video_backend="pyav", delta_timestamps={"action": [0.0, 0.1]})
    assert ds.num_episodes == 3 and len(ds) == 18
    assert ds[17]["observation.images.wrist"].shape == (3, 32, 32) and ds[17]["action"].shape == (2, 4)


def test_kill9_during_the_first_episode_then_a_fresh_start(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    proc = child("--root", str(root), "--episodes", "0", "--frames", "8", "--crash", "mid_episode", check=False)
    assert proc.returncode == -signal.SIGKILL
    assert (root / "meta" / "info.json").is_file()  # lerobot's empty dataset: nothing was saved yet
    out = json.loads(child("--root", str(root), "--episodes", "1", "--frames", "5").stdout)
    assert out["resumed_at"] == 0 and out["saved"] == [5]
    assert episode_lengths(root) == [5]


def test_encoding_a_one_camera_video_episode_leaves_the_saving_thread_normally_scheduled(tmp_path: Path) -> None:
    """One video camera is encoded in the thread that saves (two or more go to a process pool). SVT-AV1, run as root,
    leaves that thread at SCHED_FIFO 99: on a robot computer the recorder would then outrank the control loop."""
    from wm_vla.data.recorder import RecorderConfig

    cfg = RecorderConfig(tmp_path / "ds", fps=10, cameras=("front",), state_names=("a", "b", "c"), action_names=ACTION,
                         robot_type="test_arm", image_size=32, task="pick the cube", max_age_s=0.15, use_videos=True)
    rec = EpisodeRecorder(cfg)
    rng = np.random.default_rng(0)
    before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    t = 0.0
    for i in range(7):
        rec.add_image("front", t, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        rec.add_state(t, np.full(3, t))
        rec.add_action(t, np.full(len(ACTION), t), intervention=False)
        if i == 0:
            rec.start()
        else:
            rec.tick(t)
        t += 0.1
    assert rec.stop() == 6
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
    rec.close()
    assert len(list((tmp_path / "ds" / "videos").rglob("*.mp4"))) == 1
