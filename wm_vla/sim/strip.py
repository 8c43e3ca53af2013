"""PNG contact sheet of a LeRobot dataset: a row of frames per episode, read back through lerobot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wm_vla.data.lerobot_io import load_dataset


def render_strip(dataset_root: Path, out_png: Path, episodes: int = 4, frames_per_episode: int = 8) -> Path:
    """Write a PNG with `frames_per_episode` evenly spaced frames (all cameras) of the first episodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = load_dataset(Path(dataset_root))
    cams = [k for k in ds.meta.camera_keys]
    index = np.asarray(ds.hf_dataset["episode_index"])
    n_ep = min(episodes, ds.num_episodes)
    fig, axes = plt.subplots(n_ep, frames_per_episode, figsize=(1.4 * frames_per_episode * len(cams), 1.7 * n_ep),
                             squeeze=False)
    for row in range(n_ep):
        idx = np.flatnonzero(index == row)
        picks = idx[np.linspace(0, len(idx) - 1, frames_per_episode).round().astype(int)]
        for col, i in enumerate(picks):
            item = ds[int(i)]
            tiles = [(item[c].numpy().transpose(1, 2, 0) * 255).astype(np.uint8) for c in cams]
            ax = axes[row, col]
            ax.imshow(np.concatenate(tiles, axis=1))
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                outcome = "success" if bool(item["episode_success"]) else "failure"
                ax.set_title(f"ep {row}: {item['task']} [{outcome}]", fontsize=8, loc="left")
            ax.set_xlabel(f"t={float(item['timestamp']):.1f}s", fontsize=7)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
