"""Demonstration collection into real LeRobotDataset v3 files, read back with lerobot (delta_timestamps)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wm_vla.data.errors import DatasetExistsError, DatasetLocationError
from wm_vla.data.lerobot_io import load_dataset
from wm_vla.sim.collect import STATS_FILE, CollectConfig, collect
from wm_vla.sim.errors import UnknownTaskError, UnknownWorldError
from wm_vla.sim.strip import render_strip

CHUNK = 8


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wm_vla.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def arm_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("collect") / "arm"
    stats = collect(CollectConfig(world="arm", episodes=4, out=out, seed=20, progress=False))
    return out, stats


def test_dataset_loads_with_action_chunks(arm_dataset: tuple[Path, dict]) -> None:
    root, stats = arm_dataset
    fps = 10
    ds = load_dataset(root, delta_timestamps={"action": [i / fps for i in range(CHUNK)]})
    assert ds.num_episodes == stats["episodes_written"] == 4
    assert len(ds) == stats["frames_written"]
    item = ds[0]
    assert tuple(item["action"].shape) == (CHUNK, 7)
    assert tuple(item["observation.state"].shape) == (7,)
    assert tuple(item["observation.images.front"].shape) == (3, 96, 96)
    assert tuple(item["observation.images.wrist"].shape) == (3, 96, 96)
    assert item["task"] == stats["episodes_detail"][0]["instruction"]
    assert ds.meta.features["action"]["names"][-1] == "finger_left_joint"
    # the chunk at frame 0 is frames 0..7 of the same episode's actions
    raw = np.stack([ds.hf_dataset[i]["action"] for i in range(CHUNK)])
    np.testing.assert_allclose(item["action"].numpy(), raw, atol=0)


def test_labels_mark_the_last_frame_of_each_episode(arm_dataset: tuple[Path, dict]) -> None:
    root, stats = arm_dataset
    ds = load_dataset(root)
    episode = np.asarray(ds.hf_dataset["episode_index"])
    success = np.asarray(ds.hf_dataset["next.success"]).reshape(-1)
    done = np.asarray(ds.hf_dataset["next.done"]).reshape(-1)
    for ep, detail in enumerate(stats["episodes_detail"]):
        idx = np.flatnonzero(episode == ep)
        assert len(idx) == detail["frames"]
        assert done[idx[-1]] and not done[idx[:-1]].any()
        assert success[idx[-1]] == detail["success"]


def test_stats_file_and_strip(arm_dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, stats = arm_dataset
    saved = json.loads((root / STATS_FILE).read_text())
    assert saved["frames_written"] == stats["frames_written"] and saved["frames_per_second"] > 0
    png = render_strip(root, tmp_path / "strip.png", episodes=2, frames_per_episode=4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_quadruped_dataset_has_velocity_actions(tmp_path: Path) -> None:
    stats = collect(CollectConfig(world="quadruped", episodes=2, out=tmp_path / "q", progress=False))
    ds = load_dataset(tmp_path / "q")
    assert ds.meta.features["action"]["names"] == ["vx", "vy", "wz"]
    assert "observation.images.head" in ds.meta.camera_keys
    assert len(ds) == stats["frames_written"]


def test_noisy_collection_keeps_failures_with_labels(tmp_path: Path) -> None:
    stats = collect(CollectConfig(world="quadruped", episodes=6, out=tmp_path / "n", noise=1.0, progress=False))
    assert stats["episodes_written"] == 6 and stats["success"]["successes"] < 6
    ds = load_dataset(tmp_path / "n")
    failure = np.asarray(ds.hf_dataset["next.failure"]).reshape(-1)
    assert failure.sum() == 6 - stats["success"]["successes"]


def test_successes_only_drops_failed_episodes(tmp_path: Path) -> None:
    stats = collect(CollectConfig(world="quadruped", episodes=6, out=tmp_path / "s", noise=1.0, successes_only=True,
                                  progress=False))
    assert stats["episodes_written"] == stats["success"]["successes"]
    assert load_dataset(tmp_path / "s").num_episodes == stats["episodes_written"]


def test_non_empty_output_is_refused_and_nothing_is_lost(arm_dataset: tuple[Path, dict]) -> None:
    root, _ = arm_dataset
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(DatasetExistsError, match="not empty"):
        collect(CollectConfig(world="arm", episodes=1, out=root, progress=False))
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert load_dataset(root).num_episodes == 4


def test_overwrite_refuses_a_directory_that_is_not_a_dataset(tmp_path: Path) -> None:
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "important.txt").write_text("do not delete")
    with pytest.raises(DatasetExistsError, match="not a LeRobot dataset"):
        collect(CollectConfig(world="arm", episodes=1, out=keep, overwrite=True, progress=False))
    assert (keep / "important.txt").read_text() == "do not delete"


def test_unwritable_output_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(DatasetLocationError, match="is a file, not a directory"):
        collect(CollectConfig(world="arm", episodes=1, out=blocker / "dataset", progress=False))


def test_reading_a_directory_that_is_not_a_dataset_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(DatasetLocationError, match="not a LeRobot dataset"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(("args", "error"), [
    (("--world", "moon", "--episodes", "1"), UnknownWorldError),
    (("--world", "arm", "--episodes", "1", "--task", "juggle"), UnknownTaskError),
])
def test_bad_world_or_task_creates_nothing(tmp_path: Path, args: tuple[str, ...], error: type[Exception]) -> None:
    kw = dict(zip(("world", "episodes"), (args[1], int(args[3]))))
    with pytest.raises(error):
        collect(CollectConfig(**kw, family=args[5] if len(args) > 4 else None, out=tmp_path / "d", progress=False))  # type: ignore[arg-type]
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(("flag", "value", "message"), [("--episodes", "0", "must be positive"),
                                                         ("--noise", "1.5", "must be in [0, 1]")])
def test_cli_rejects_bad_numbers(tmp_path: Path, flag: str, value: str, message: str) -> None:
    args = {"--episodes": "1", "--noise": "0"} | {flag: value}
    proc = _cli("sim", "collect", "--world", "arm", "--out", str(tmp_path / "d"), *[x for kv in args.items() for x in kv])
    assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.slow
def test_cli_collects_50_arm_episodes_that_lerobot_loads(tmp_path: Path) -> None:
    out = tmp_path / "arm50"
    proc = _cli("sim", "collect", "--world", "arm", "--episodes", "50", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 50 episodes" in proc.stdout
    ds = load_dataset(out, delta_timestamps={"action": [i / 10 for i in range(CHUNK)]})
    assert ds.num_episodes == 50
    last = ds[len(ds) - 1]
    assert tuple(last["action"].shape) == (CHUNK, 7)
    assert last["action_is_pad"][1:].all()  # past the episode end the chunk is padding


def test_video_storage_round_trips(tmp_path: Path) -> None:
    import os

    before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    stats = collect(CollectConfig(world="quadruped", episodes=1, out=tmp_path / "v", use_videos=True, progress=False))
    # SVT-AV1 run as root leaves the encoding thread at SCHED_FIFO 99 unless the writer puts it back
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
    ds = load_dataset(tmp_path / "v", delta_timestamps={"action": [0.0, 0.1]})
    assert ds.meta.video_keys == ["observation.images.head"]
    assert len(ds) == stats["frames_written"]
    frame = ds[len(ds) // 2]["observation.images.head"]
    assert tuple(frame.shape) == (3, 96, 96) and float(frame.std()) > 0.02
