"""Crash-safe episode writing on lerobot's LeRobotDataset (v3) API: every saved episode is durable.

Why: in lerobot 0.4.x the data and episode-metadata parquet files stay open across episodes (their footers are
written only by `finalize()`) and episode metadata is buffered 10 at a time, so a kill -9 loses every episode since
the last `finalize()` and leaves parquet files lerobot cannot read. Resuming on the same object after `finalize()`
would reopen (truncate) the file it just closed.

Design: after each `save_episode` the writers are closed (`finalize()`), the new files are fsynced and a commit
record (`.wm_vla/commit.json`: episode/frame counts, every data/meta/video file with its size, snapshots of
info.json / stats.json / tasks.parquet) is replaced atomically. The dataset object is then pointed at fresh files
(lerobot's own resume path: each episode gets its own data, metadata and video file). Opening an existing dataset
repairs it to its last commit: files of an interrupted save are removed, metadata JSON rewritten from the snapshot,
temporary frame images dropped. A kill -9 therefore loses at most the episode being recorded or saved.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from wm_vla.cpus import thread_scheduling_kept
from wm_vla.data.errors import DatasetExistsError, DatasetMismatchError, DiskFullError, RecorderError
from wm_vla.data.lerobot_io import prepare_output_dir

JOURNAL_DIR = ".wm_vla"
COMMIT = "commit.json"
SNAPSHOT = ("meta/info.json", "meta/stats.json", "meta/tasks.parquet")
TRACKED = ("data", "meta", "videos")  # lerobot's durable trees; `images/` holds temporary frames only
LOW_SPACE_BYTES = 1 << 20


class DurableDataset:
    """Create or resume a local LeRobotDataset; `add_frame` streams, `save_episode` commits, `discard_episode` drops.

    Resuming checks that fps, robot type and every feature (names, dtype, shape) match `features`; a mismatch raises
    DatasetMismatchError before anything is written. `min_free_mb`: refuse to start an episode below this free space.
    """

    def __init__(self, root: Path, repo_id: str, fps: int, features: dict[str, dict[str, Any]], robot_type: str,
                 use_videos: bool = False, image_writer_threads: int = 2, min_free_mb: float = 0.0) -> None:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
        self.root, self.min_free_mb = Path(root), min_free_mb
        self.journal = self.root / JOURNAL_DIR
        self._spec = (repo_id, fps, features, robot_type, use_videos, image_writer_threads)
        self.resumed = self._is_committed()
        self.dataset: Any = None
        self._open()
        self.frames_in_episode = 0

    def _is_committed(self) -> bool:
        return (self.root / "meta" / "info.json").is_file() and _committed_episodes(self.root) > 0

    def _open(self) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        repo_id, fps, features, robot_type, use_videos, threads = self._spec
        if self._is_committed():
            self.repair()
            check_compatible(self.root, fps, features, robot_type)
            self.dataset = _reopen(self.root, repo_id)
        else:
            if (self.root / "meta" / "info.json").is_file():  # created, but a crash came before the first commit
                for name in (*TRACKED, "images", JOURNAL_DIR):
                    shutil.rmtree(self.root / name, ignore_errors=True)
            prepare_output_dir(self.root)
            if self.root.is_dir():  # empty (checked above): lerobot creates the directory itself
                self.root.rmdir()
            self.dataset = LeRobotDataset.create(repo_id=repo_id, fps=fps, features=features, root=self.root,
                                                 robot_type=robot_type, use_videos=use_videos)
        if threads:
            self.dataset.start_image_writer(num_threads=threads)

    # ----- counts -----
    @property
    def episodes(self) -> int:
        return int(self.dataset.meta.total_episodes)

    @property
    def frames(self) -> int:
        return int(self.dataset.meta.total_frames)

    # ----- episode -----
    def check_space(self) -> None:
        """DiskFullError when the filesystem has less than `min_free_mb` free."""
        free = shutil.disk_usage(self.root).free
        if free < self.min_free_mb * 1e6:
            raise DiskFullError(errno.ENOSPC, f"only {free / 1e6:.1f} MB free under {self.root} (need "
                                              f"{self.min_free_mb:.0f} MB to record); {self.episodes} saved episodes "
                                              "are intact")

    def add_frame(self, frame: dict[str, Any]) -> None:
        """One frame (feature name -> value, plus "task"); images go to lerobot's temporary PNGs."""
        try:
            self.dataset.add_frame(frame)
        except ValueError as exc:
            raise DatasetMismatchError(f"frame does not match the dataset's features: {exc}") from exc
        self.frames_in_episode += 1

    def label_episode(self, success: bool) -> None:
        """Outcome labels of the buffered episode (lerobot's `episode_buffer` holds one value per frame)."""
        buf = self.dataset.episode_buffer
        n = self.frames_in_episode
        for key, last in (("episode_success", success), ("next.done", True), ("next.success", success),
                          ("next.failure", not success)):
            if key in buf:
                buf[key] = [np.array([success if key == "episode_success" else (last and i == n - 1)])
                            for i in range(n)]

    def discard_episode(self) -> None:
        if self.frames_in_episode:
            self.dataset.clear_episode_buffer()
        self.frames_in_episode = 0

    def save_episode(self) -> int:
        """Write the buffered frames as one episode and commit it; returns its frame count.

        On any failure the episode is dropped and the dataset rolled back to its last commit (DiskFullError when the
        filesystem is full, RecorderError otherwise)."""
        n = self.frames_in_episode
        if n == 0:
            raise RecorderError("cannot save an empty episode")
        try:
            # video encoding (SVT-AV1) as root would leave this thread real-time: thread_scheduling_kept
            with warnings.catch_warnings(), thread_scheduling_kept():
                # lerobot's stats cast bool labels to uint8 and says so every episode
                warnings.filterwarnings("ignore", message="Converting input from bool", category=RuntimeWarning)
                self.dataset.save_episode()
                self.dataset.finalize()
            self.commit()
        except Exception as exc:
            full = _is_disk_full(exc) or shutil.disk_usage(self.root).free < LOW_SPACE_BYTES
            self._rollback()
            if full:
                raise DiskFullError(errno.ENOSPC, f"disk full while saving episode {self.episodes} under {self.root}: "
                                                  f"episode discarded, {self.episodes} saved episodes are intact"
                                    ) from exc
            raise RecorderError(f"saving episode {self.episodes} failed ({exc}); rolled back to "
                                f"{self.episodes} saved episodes") from exc
        self.frames_in_episode = 0
        _start_new_files(self.dataset)
        return n

    def close(self) -> None:
        """Drop an unsaved episode and stop the image writer (committed data needs nothing more)."""
        self.discard_episode()
        self.dataset.stop_image_writer()

    # ----- commit / repair -----
    def commit(self) -> None:
        """fsync the dataset's files, snapshot the metadata and atomically replace the commit record."""
        files = _tracked_files(self.root)
        for rel in files:
            _fsync(self.root / rel)
        snap = f"snapshot-{self.episodes:06d}"
        (self.journal / snap).mkdir(parents=True, exist_ok=True)
        for rel in SNAPSHOT:
            if (self.root / rel).is_file():
                dst = self.journal / snap / Path(rel).name
                shutil.copyfile(self.root / rel, dst)
                _fsync(dst)
        _fsync_dir(self.journal / snap)
        record = {"episodes": self.episodes, "frames": self.frames, "snapshot": snap, "files": files}
        _atomic_write(self.journal / COMMIT, json.dumps(record, indent=1))
        _fsync_dir(self.journal)
        for old in self.journal.glob("snapshot-*"):
            if old.name != snap:
                shutil.rmtree(old, ignore_errors=True)

    def repair(self) -> list[str]:
        """Bring the files back to the last commit; returns the paths removed or restored."""
        record = _read_commit(self.root)
        if record is None:  # a dataset from elsewhere: take it as it is
            return []
        changed = []
        for rel in _tracked_files(self.root):
            if rel not in record["files"]:
                (self.root / rel).unlink()
                changed.append(rel)
        for rel in SNAPSHOT:
            saved = self.journal / record["snapshot"] / Path(rel).name
            if saved.is_file() and (not (self.root / rel).is_file()
                                    or (self.root / rel).read_bytes() != saved.read_bytes()):
                shutil.copyfile(saved, self.root / rel)
                changed.append(rel)
        missing = [rel for rel in record["files"] if not (self.root / rel).is_file()]
        if missing:
            raise RecorderError(f"{self.root}: committed file(s) missing, the dataset was modified outside the "
                                f"recorder: {missing[:5]}")
        shutil.rmtree(self.root / "images", ignore_errors=True)  # temporary frames of an unsaved episode
        return changed

    def _rollback(self) -> None:
        """Drop the failed episode's writers and files, then reopen at the last commit."""
        ds = self.dataset
        for owner in (ds, ds.meta):
            writer, owner.writer = owner.writer, None
            if writer is not None:
                try:
                    writer.close()
                except Exception:  # noqa: BLE001 - a full disk cannot take the footer; the file is removed below
                    pass
        ds.meta.metadata_buffer.clear()
        ds.stop_image_writer()
        self.frames_in_episode = 0
        self._open()


def check_compatible(root: Path, fps: int, features: dict[str, dict[str, Any]], robot_type: str) -> None:
    """DatasetMismatchError listing every difference between an existing dataset and the recorder's setup."""
    info = json.loads((Path(root) / "meta" / "info.json").read_text())
    problems = []
    if int(info.get("fps", -1)) != int(fps):
        problems.append(f"fps {info.get('fps')} != {fps}")
    if info.get("robot_type") not in (None, robot_type):
        problems.append(f"robot_type {info.get('robot_type')!r} != {robot_type!r}")
    have = info.get("features", {})
    for key, spec in features.items():
        old = have.get(key)
        if old is None:
            problems.append(f"{key}: not in the dataset")
            continue
        kind = "image" if spec["dtype"] in ("image", "video") else spec["dtype"]
        old_kind = "image" if old["dtype"] in ("image", "video") else old["dtype"]
        if kind != old_kind or tuple(old["shape"]) != tuple(spec["shape"]):
            problems.append(f"{key}: dataset has {old['dtype']} {tuple(old['shape'])}, recorder gives "
                            f"{spec['dtype']} {tuple(spec['shape'])}")
        elif spec.get("names") and old.get("names") and list(old["names"]) != list(spec["names"]):
            problems.append(f"{key}: names {old['names']} != {spec['names']}")
    extra = sorted(k for k, v in have.items() if k not in features and v["dtype"] in ("image", "video", "float32")
                   and k.startswith(("observation.", "action")))
    problems += [f"{k}: in the dataset but not recorded" for k in extra]
    if problems:
        raise DatasetMismatchError(f"{root}: cannot append to this dataset: " + "; ".join(problems))


def _reopen(root: Path, repo_id: str) -> Any:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    try:
        return LeRobotDataset(repo_id, root=root)
    except (OSError, ValueError) as exc:
        raise DatasetExistsError(f"{root}: cannot reopen the dataset to append: {exc}") from exc


def _start_new_files(ds: Any) -> None:
    """Point lerobot 0.4.x at fresh data/metadata/video files for the next episode (its resume path).

    With `latest_episode` unset, `_save_episode_data`, `_save_episode_metadata` and `_save_episode_video` take the
    last committed episode from `meta.episodes` and move to the next file index, exactly as after reopening the
    dataset, without re-reading every frame into the datasets cache."""
    from lerobot.datasets.utils import load_episodes

    ds.latest_episode = None
    ds.meta.latest_episode = None
    ds.meta.episodes = load_episodes(ds.root) if ds.meta.total_episodes else None
    ds._writer_closed_for_reading = False


def committed_episodes(root: Path) -> int:
    """Episodes of the last commit at `root` (0 when there is none); what survives a crash right now."""
    record = _read_commit(Path(root))
    return int(record["episodes"]) if record else 0


def _committed_episodes(root: Path) -> int:
    record = _read_commit(root)
    if record is not None:
        return int(record["episodes"])
    try:  # a dataset from elsewhere: what its info.json says
        return int(json.loads((root / "meta" / "info.json").read_text()).get("total_episodes", 0))
    except (OSError, ValueError) as exc:
        raise DatasetExistsError(f"{root}: unreadable meta/info.json and no commit record: {exc}") from exc


def _read_commit(root: Path) -> dict[str, Any] | None:
    path = Path(root) / JOURNAL_DIR / COMMIT
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:  # replaced atomically, so this is outside damage
        raise RecorderError(f"{path}: corrupt commit record: {exc}") from exc


def _tracked_files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for name in TRACKED
            for p in sorted((root / name).rglob("*")) if p.is_file()}


def _is_disk_full(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # some filesystems cannot fsync directories
        pass


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
