"""The ROS-free half of `wm-vla bag play`: which messages to publish, when, and under which topic name.

`play_schedule` yields serialized (CDR) messages in bag order with their due time in seconds after the start of
playback (bag time from the start offset, divided by the rate); a node publishes them as they fall due.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Reader

from wm_vla.data.bags.reader import BagReader, normalize_type
from wm_vla.data.errors import BagTopicError

NS = 1_000_000_000


@dataclass
class PlayConfig:
    bag: Path
    rate: float = 1.0
    loop: bool = False
    start_offset_s: float = 0.0
    remap: Mapping[str, str] = field(default_factory=dict)  # bag topic -> published topic
    topics: tuple[str, ...] = ()                             # only these bag topics (empty: all)
    clock_hz: float = 0.0                                    # publish /clock at this rate (0: off)

    def validate(self) -> PlayConfig:
        if not self.rate > 0:
            raise BagTopicError(f"rate must be > 0, got {self.rate}")
        if self.start_offset_s < 0:
            raise BagTopicError(f"start offset must be >= 0 s, got {self.start_offset_s}")
        if self.clock_hz < 0:
            raise BagTopicError(f"clock rate must be >= 0 Hz, got {self.clock_hz}")
        return self


@dataclass(frozen=True)
class Item:
    topic: str          # published name (after remapping)
    msgtype: str        # 'pkg/msg/Type'
    data: bytes         # CDR, as recorded
    log_ns: int         # bag time
    due_s: float        # seconds after playback start (this loop iteration)


def parse_remaps(items: list[str]) -> dict[str, str]:
    """`from:=to` (ros2 style) or `from=to` strings -> dict."""
    out = {}
    for item in items:
        src, sep, dst = item.partition(":=") if ":=" in item else item.partition("=")
        if not sep or not src.startswith("/") or not dst.startswith("/"):
            raise BagTopicError(f"remap must be /from:=/to, got {item!r}")
        out[src] = dst
    return out


def bag_topics(bag: Path) -> dict[str, str]:
    """bag topic -> message type."""
    with _open(bag) as reader:
        return {c.topic: normalize_type(c.msgtype) for c in reader.connections}


@contextmanager
def _open(bag: Path) -> Iterator[Reader | AnyReader]:
    """A bag, a recorder session (its parts merged in time) or a cut-off mcap (read up to its last complete record);
    BagOpenError when none of these."""
    with BagReader(bag) as reader:
        yield reader.rosbags_reader


def play_schedule(cfg: PlayConfig) -> Iterator[Item]:
    """Messages due in order; with `loop`, the bag repeats (due times keep increasing)."""
    cfg.validate()
    offset_s = 0.0
    while True:
        with _open(Path(cfg.bag)) as reader:
            missing = [t for t in cfg.topics if t not in {c.topic for c in reader.connections}]
            if missing:
                raise BagTopicError(f"{cfg.bag}: no topic(s) {missing}")
            conns = [c for c in reader.connections if not cfg.topics or c.topic in cfg.topics]
            start = reader.start_time + int(cfg.start_offset_s * NS)
            last = start
            for conn, log_ns, data in reader.messages(connections=conns, start=start):
                last = max(last, log_ns)
                yield Item(cfg.remap.get(conn.topic, conn.topic), normalize_type(conn.msgtype), bytes(data), log_ns,
                           offset_s + (log_ns - start) / NS / cfg.rate)
        if not cfg.loop:
            return
        offset_s += (last - start) / NS / cfg.rate + 1.0 / max(cfg.clock_hz, 30.0)
