"""LeRobotDataset v3 -> in-memory frames -> training windows (observation, action chunk, future observation, labels)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wm_vla.data.lerobot_io import HINDSIGHT_FEATURES, HINDSIGHT_FILE, load_dataset
from wm_vla.models.flare_policy import ObsBatch
from wm_vla.models.preprocess import resize_uint8
from wm_vla.training.errors import DatasetFeatureError

PROGRESS_DISCOUNT = 0.95  # per frame: progress label = discount ** (frames from t+H to the success frame)


@dataclass
class FrameStore:
    """Every frame of a dataset in memory: uint8 images, state, action, episode bounds, labels."""

    cameras: tuple[str, ...]
    fps: int
    images: torch.Tensor          # (N, cams, 3, S, S) uint8
    state: torch.Tensor           # (N, state_dim) float32
    action: torch.Tensor          # (N, action_dim) float32
    tasks: list[str]              # per frame
    episode_end: torch.Tensor     # (N,) index of the last frame of the frame's episode
    failure: torch.Tensor         # (N,) bool: a failure event happens at this frame
    episode_success: torch.Tensor  # (N,) bool
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    # hindsight labels (`sim collect`): each frame judged for A other instructions, (N, A) each, if recorded
    relabel_success: torch.Tensor | None = None
    relabel_failure: torch.Tensor | None = None
    relabel_tasks: list[list[str]] | None = None  # per frame, the A instructions

    def __len__(self) -> int:
        return int(self.state.shape[0])

    @property
    def relabels(self) -> int:
        return 0 if self.relabel_success is None else int(self.relabel_success.shape[1])

    def hindsight(self) -> list[tuple[FrameStore, torch.Tensor]]:
        """One copy per relabel: the same frames (images shared, not copied) as episodes of the other
        instruction, each ending at its first hindsight success or failure; with the indices of the frames that
        copy keeps (those up to that end)."""
        if self.relabel_success is None or self.relabel_failure is None or self.relabel_tasks is None:
            return []
        n = len(self)
        frame = torch.arange(n)
        starts = torch.zeros(n, dtype=torch.long)
        starts[1:] = torch.where(self.episode_end[:-1] < frame[1:], frame[1:], torch.zeros(n - 1, dtype=torch.long))
        starts = torch.cummax(starts, 0).values  # first frame of each frame's episode
        copies = []
        for a in range(self.relabels):
            event = self.relabel_success[:, a] | self.relabel_failure[:, a]
            end = self.episode_end.clone()
            for first in torch.unique(starts).tolist():
                last = int(self.episode_end[first])
                hits = torch.nonzero(event[first:last + 1]).flatten()
                if len(hits):
                    end[first:last + 1] = first + int(hits[0])
            keep = torch.nonzero(frame <= end).flatten()
            copies.append((replace(self, tasks=[t[a] for t in self.relabel_tasks], episode_end=end,
                                   failure=self.relabel_failure[:, a].clone(),
                                   episode_success=self.relabel_success[end, a].clone(),
                                   relabel_success=None, relabel_failure=None, relabel_tasks=None), keep))
        return copies


def load_frames(root: Path | str, image_size: int, cameras: tuple[str, ...] | None = None,
                progress: bool = True) -> FrameStore:
    """Read a LeRobotDataset v3 through lerobot (images or video) into memory, resized to `image_size`."""
    ds = load_dataset(Path(root))
    feats = ds.meta.features
    for key in ("observation.state", "action"):
        if key not in feats:
            raise DatasetFeatureError(f"{root}: dataset has no {key!r} feature (has: {', '.join(sorted(feats))})")
    cam_keys = list(ds.meta.camera_keys)
    if not cam_keys:
        raise DatasetFeatureError(f"{root}: dataset has no image or video feature")
    available = tuple(k.removeprefix("observation.images.").removeprefix("observation.") for k in cam_keys)
    cameras = cameras or available
    missing = [c for c in cameras if c not in available]
    if missing:
        raise DatasetFeatureError(f"{root}: cameras {missing} not in the dataset (has: {', '.join(available)})")
    keys = [cam_keys[available.index(c)] for c in cameras]
    n = len(ds)
    images = torch.zeros(n, len(keys), 3, image_size, image_size, dtype=torch.uint8)
    raw = ds.hf_dataset.with_format(None)  # plain columns: PNG-backed images decode in bulk, ~20x faster
    bar = tqdm(total=n * len(keys), desc=f"load {Path(root).name}", unit="img", disable=not progress, mininterval=1.0)
    for c, key in enumerate(keys):
        if feats[key]["dtype"] == "image":
            for start in range(0, n, 1024):
                stop = min(n, start + 1024)
                block = np.stack([np.asarray(im.convert("RGB")) for im in raw.select(range(start, stop))[key]])
                images[start:stop, c] = resize_uint8(torch.from_numpy(block).permute(0, 3, 1, 2), image_size)
                bar.update(stop - start)
        else:  # video: frames come from lerobot's decoder, one item at a time
            for i in range(n):
                frame = (ds[i][key].clamp(0, 1) * 255).round().to(torch.uint8)
                images[i, c] = resize_uint8(frame[None], image_size)[0]
                bar.update(1)
    bar.close()
    state = torch.as_tensor(np.asarray(raw["observation.state"], dtype=np.float32))
    action = torch.as_tensor(np.asarray(raw["action"], dtype=np.float32))
    task_names = list(ds.meta.tasks.index)
    tasks = [task_names[int(i)] for i in raw["task_index"]]
    hf = ds.hf_dataset
    episode = np.asarray(hf["episode_index"])
    ends = np.zeros(n, dtype=np.int64)
    for ep in np.unique(episode):
        idx = np.flatnonzero(episode == ep)
        ends[idx] = idx[-1]
    def column(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(hf[name]).reshape(n).astype(bool)) if name in feats else torch.zeros(n, dtype=torch.bool)
    if not torch.isfinite(state).all() or not torch.isfinite(action).all():
        raise DatasetFeatureError(f"{root}: state or action contains NaN/inf")
    relabel = _load_hindsight(Path(root), hf, feats, tasks, n)
    return FrameStore(tuple(cameras), int(ds.fps), images, state, action, tasks, torch.from_numpy(ends),
                      column("next.failure"), column("episode_success") if "episode_success" in feats else torch.ones(n, dtype=torch.bool),
                      tuple(feats["observation.state"].get("names") or ()), tuple(feats["action"].get("names") or ()),
                      *relabel)


def _load_hindsight(root: Path, hf: object, feats: dict, tasks: list[str], n: int) -> tuple:
    """(success, failure, instructions) hindsight labels of a `sim collect` dataset, or Nones if it has none."""
    present = [k for k in HINDSIGHT_FEATURES if k in feats]
    sidecar = root / HINDSIGHT_FILE
    if not present and not sidecar.exists():
        return None, None, None
    if len(present) < len(HINDSIGHT_FEATURES) or not sidecar.is_file():
        raise DatasetFeatureError(f"{root}: incomplete hindsight labels: needs the features "
                                  f"{', '.join(HINDSIGHT_FEATURES)} and {HINDSIGHT_FILE}")
    try:
        meta = json.loads(sidecar.read_text())
        relabels, by_task = int(meta["relabels"]), dict(meta["instructions"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetFeatureError(f"{sidecar}: not a hindsight description ({exc})") from exc
    labels = [torch.from_numpy(np.asarray(hf[k], dtype=bool).reshape(n, -1)) for k in HINDSIGHT_FEATURES]  # type: ignore[index]
    missing = sorted({t for t in tasks if len(by_task.get(t, ())) != relabels})
    if any(lab.shape[1] != relabels for lab in labels) or missing:
        raise DatasetFeatureError(f"{root}: hindsight labels must have {relabels} columns with {relabels} instructions "
                                  f"per task" + (f"; {HINDSIGHT_FILE} lacks them for {missing[:3]}" if missing else ""))
    return labels[0], labels[1], [list(by_task[t]) for t in tasks]


class Windows:
    """Index -> (obs_t, actions t..t+H-1 with padding mask, obs_{t+H}, world-model labels)."""

    def __init__(self, store: FrameStore, horizon: int) -> None:
        self.store, self.horizon = store, horizon
        self._offsets = torch.arange(horizon)

    def __len__(self) -> int:
        return len(self.store)

    def obs(self, idx: torch.Tensor) -> ObsBatch:
        s = self.store
        return ObsBatch(s.images[idx].float() / 255.0, s.state[idx], [s.tasks[int(i)] for i in idx])

    def chunk(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions t..t+H-1 (repeating the last one past the episode end) and the padding mask."""
        raw = idx[:, None] + self._offsets[None]
        end = self.store.episode_end[idx][:, None]
        return self.store.action[torch.minimum(raw, end)], raw > end

    def future_index(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.minimum(idx + self.horizon, self.store.episode_end[idx])

    def labels(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(failure within the chunk horizon, discounted progress-to-success at t+H)."""
        s = self.store
        raw = idx[:, None] + self._offsets[None]
        end = s.episode_end[idx]
        inside = raw <= end[:, None]
        fail = (s.failure[torch.minimum(raw, end[:, None])] & inside).any(1)
        remaining = (end - self.future_index(idx)).float()
        progress = torch.where(s.episode_success[idx], PROGRESS_DISCOUNT ** remaining, torch.zeros_like(remaining))
        return fail.float(), progress
