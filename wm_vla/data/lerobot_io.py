"""Writing and reading LeRobotDataset v3 through lerobot's own API (images, state, action, task, labels)."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from wm_vla.cpus import thread_scheduling_kept
from wm_vla.data.errors import DatasetExistsError, DatasetFormatError, DatasetLocationError
from wm_vla.pickle_guard import pickle_kind, refusal

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # datasets are local; never reach for a hub at run time

LABEL_FEATURES = ("next.success", "next.failure", "next.done", "episode_success")
HINDSIGHT_FEATURES = ("hindsight.success", "hindsight.failure")  # (relabels,) per frame, see `sim collect`
HINDSIGHT_FILE = "hindsight.json"  # dataset root: {"relabels": A, "instructions": {instruction: [A instructions]}}


def frame_features(camera_names: tuple[str, ...], image_size: int, state_names: tuple[str, ...],
                   action_names: tuple[str, ...], use_videos: bool, relabels: int = 0) -> dict[str, dict[str, Any]]:
    """LeRobot feature spec: one image/video per camera, state, action and per-frame outcome labels (and, with
    `relabels`, the hindsight outcome of each frame for that many other instructions)."""
    kind = "video" if use_videos else "image"
    features: dict[str, dict[str, Any]] = {
        f"observation.images.{cam}": {"dtype": kind, "shape": (image_size, image_size, 3),
                                      "names": ["height", "width", "channels"]}
        for cam in camera_names
    }
    features["observation.state"] = {"dtype": "float32", "shape": (len(state_names),), "names": list(state_names)}
    features["action"] = {"dtype": "float32", "shape": (len(action_names),), "names": list(action_names)}
    for label in LABEL_FEATURES:
        features[label] = {"dtype": "bool", "shape": (1,), "names": None}
    for label in HINDSIGHT_FEATURES if relabels else ():
        features[label] = {"dtype": "bool", "shape": (relabels,), "names": None}
    return features


def prepare_output_dir(root: Path, overwrite: bool = False) -> None:
    """Fail early and clearly if `root` cannot hold a new dataset; lerobot creates `root` itself."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if not overwrite:
            raise DatasetExistsError(f"{root} already exists and is not empty; choose another --out or pass --overwrite")
        if not (root / "meta" / "info.json").is_file():
            raise DatasetExistsError(f"refusing to overwrite {root}: it is not a LeRobot dataset")
        import shutil

        shutil.rmtree(root)
    parent = root.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise DatasetLocationError(f"cannot write a dataset under {parent}: {blocker} is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise DatasetLocationError(f"cannot write a dataset under {parent}: {exc.strerror or exc}") from exc


class LeRobotWriter:
    """Episode-at-a-time writer over `LeRobotDataset.create` / `add_frame` / `save_episode` / `finalize`."""

    def __init__(self, root: Path, repo_id: str, fps: int, features: dict[str, dict[str, Any]], robot_type: str,
                 use_videos: bool = False, overwrite: bool = False) -> None:
        from datasets.utils.logging import disable_progress_bar
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        disable_progress_bar()
        prepare_output_dir(Path(root), overwrite)
        self.root = Path(root)
        self.dataset = LeRobotDataset.create(repo_id=repo_id, fps=fps, features=features, root=self.root,
                                             robot_type=robot_type, use_videos=use_videos, image_writer_threads=2)
        self.episodes = 0

    def write_episode(self, frames: list[dict[str, Any]]) -> None:
        """Add every frame (dicts keyed by feature name plus "task") and save them as one episode."""
        for frame in frames:
            self.dataset.add_frame(frame)
        # video encoding (SVT-AV1) as root would leave this thread real-time: thread_scheduling_kept
        with warnings.catch_warnings(), thread_scheduling_kept():
            # lerobot's stats cast our bool labels to uint8 and says so every episode
            warnings.filterwarnings("ignore", message="Converting input from bool", category=RuntimeWarning)
            self.dataset.save_episode()
        self.episodes += 1

    def finalize(self) -> None:
        with thread_scheduling_kept():
            self.dataset.finalize()


def load_dataset(root: Path, repo_id: str | None = None, delta_timestamps: dict[str, list[float]] | None = None) -> Any:
    """Open a local LeRobotDataset (v3) with lerobot's own class (parquet + JSON + PNG/video: nothing it reads
    unpickles); every file is sniffed first and a pickle-bearing one is refused with DatasetFormatError."""
    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise DatasetLocationError(f"{root} is not a LeRobot dataset (no meta/info.json)")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        kind = pickle_kind(path)
        if kind:
            raise DatasetFormatError(refusal(path, kind, f"a LeRobot dataset file ({path.suffix or 'no suffix'})"))
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    try:
        return LeRobotDataset(repo_id or f"local/{root.name}", root=root, delta_timestamps=delta_timestamps)
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetFormatError(f"{root}: lerobot cannot open the dataset: {exc}") from exc


def as_bool(value: bool) -> np.ndarray:
    return np.array([bool(value)])
