"""Disk full while recording: the stack's mcap recorder (BagRecorder) runs out of space mid-bag. It must raise a
typed BagWriteError saying what was kept, every part it closed before stays whole, and the part it was writing
reads back (BagReader recovers a truncated mcap) up to its last complete record: nothing saved is lost.

The disk is a real 2 MiB tmpfs when this process may mount one (root); otherwise the kernel's per-process file
size limit (RLIMIT_FSIZE, EFBIG instead of ENOSPC) makes the same write fail, with one part."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wm_vla.data.bags.reader import BagReader

RECORD = r"""
import json, resource, signal, sys
from pathlib import Path
import numpy as np
from wm_vla.data.bags import messages as m
from wm_vla.data.bags.writer import BagRecorder, RecorderConfig
from wm_vla.data.errors import BagWriteError

out, limit, split = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
per_part, error = {}, None
rng = np.random.default_rng(0)
rec = BagRecorder(RecorderConfig(out, name="rec", split_bytes=split))
try:
    for i in range(100000):
        ns = 1_000_000_000 + i * 33_000_000
        rec.write("/camera/front/color/image_raw", "sensor_msgs/msg/Image",
                  m.image(rng.integers(0, 255, (48, 48, 3), np.uint8), ns), ns)
        per_part[rec.parts[-1].name] = per_part.get(rec.parts[-1].name, 0) + 1
except BagWriteError as exc:
    error = str(exc)
try:
    rec.close()  # nothing left to close after the failure: must not raise again
except BagWriteError as exc:
    error = f"close raised: {exc}"
print(json.dumps({"per_part": per_part, "error": error, "messages": rec.messages}))
"""


def _can_mount_tmpfs(where: Path) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """(directory, file-size limit): a 2 MiB tmpfs (limit 0), or a plain directory with a 400 KiB limit."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if _can_mount_tmpfs(mnt):
        yield mnt, 0
        subprocess.run(["umount", str(mnt)], check=True)
    else:
        yield mnt, 400_000


def test_disk_full_while_recording_keeps_every_saved_message(small_disk: tuple[Path, int]) -> None:
    disk, limit = small_disk
    split = 700_000 if not limit else 10_000_000   # tmpfs: a few complete parts before the disk fills
    run = subprocess.run([sys.executable, "-c", RECORD, str(disk / "bags"), str(limit), str(split)],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"\n[fault] disk full while recording ({'tmpfs 2 MiB' if not limit else 'RLIMIT_FSIZE'}): {report}")
    assert report["error"] and "complete part(s) kept" in report["error"]
    assert "No space left on device" in report["error"] or "File too large" in report["error"]
    parts = sorted((disk / "bags").iterdir())
    assert [p.name for p in parts] == sorted(report["per_part"])
    for part in parts[:-1]:  # closed before the disk filled: whole
        with BagReader(part) as bag:
            assert sum(bag.message_counts().values()) == report["per_part"][part.name]
    with BagReader(parts[-1]) as bag:  # the one being written: recovered up to its last complete record
        got = sum(bag.message_counts().values())
        assert 0 < got <= report["per_part"][parts[-1].name]
    if not limit:
        assert len(parts) >= 2, "the tmpfs run should close at least one whole part before the disk fills"
