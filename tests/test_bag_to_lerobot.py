"""`wm-vla bag to-lerobot`: a realsense/JTC-style bag of sim expert episodes -> LeRobot v3 dataset via lerobot's API;
appends to a matching dataset, refuses a mismatching one, reports a missing bag clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bag_helpers import sim_bag
from wm_vla.cli import main
from wm_vla.data.lerobot_io import load_dataset


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return sim_bag(tmp_path_factory.mktemp("bag") / "sim", episodes=2, image_size=64)


def convert(bag_path: Path, out: Path, *extra: str) -> int:
    return main(["bag", "to-lerobot", str(bag_path), "--profile", "arm", "--out", str(out), "--cameras", "front,wrist",
                 "--image-size", "32", *extra])


def test_bag_episodes_become_a_lerobot_dataset(bag: tuple[Path, dict], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path, summary = bag
    out = tmp_path / "ds"
    assert convert(path, out) == 0
    assert "frames/s" in capsys.readouterr().out
    report = json.loads((out / "convert_summary.json").read_text())
    steps = [e["steps"] for e in summary["episodes"]]
    assert report["episodes"] == 2 and report["frames_per_second"] > 0
    assert all(abs(n - s) <= 2 for n, s in zip(report["episode_lengths"], steps)), (report, steps)
    ds = load_dataset(out, delta_timestamps={"action": [0.0, 0.1, 0.2]})
    assert ds.num_episodes == 2 and ds[0]["observation.images.wrist"].shape == (3, 32, 32)
    raw = ds.hf_dataset.with_format(None)
    actions, states = np.asarray(raw["action"]), np.asarray(raw["observation.state"])
    assert np.all(np.isfinite(actions)) and actions.shape[1] == 7
    # the commanded joint targets lead the measured joints: the next state is close to this frame's action
    first = report["episode_lengths"][0]
    err = np.abs(actions[: first - 1, :6] - states[1:first, :6]).mean()
    assert err < 0.05, err
    assert set(ds.meta.tasks.index) == {e["instruction"] for e in summary["episodes"]}
    assert convert(path, out) == 0  # a second conversion appends
    assert load_dataset(out).num_episodes == 4


def test_bad_inputs_get_clear_errors(bag: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert convert(tmp_path / "no_such_bag", tmp_path / "x") == 2
    assert "no_such_bag" in capsys.readouterr().err
    out = tmp_path / "ds"
    assert convert(bag[0], out, "--episodes", "0:2") == 0
    before = sorted(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert main(["bag", "to-lerobot", str(bag[0]), "--out", str(out), "--cameras", "front", "--image-size", "32",
                 "--episodes", "0:2"]) == 2  # one camera fewer than the dataset has
    assert "wrist" in capsys.readouterr().err
    assert sorted(p.stat().st_size for p in out.rglob("*") if p.is_file()) == before
