"""Read ROS 2 bags (mcap or sqlite3 directories, or a bare .mcap file) with rosbags, tolerating bad bags.

Messages are deserialised with our typestore (Kilted + wm_vla_interfaces) plus any type definitions the bag
carries. Problems do not crash a read: undecodable messages, unknown types and a truncated tail are counted in
`BagIssues` and reported; only a bag that cannot be opened at all raises `BagOpenError`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_types_from_idl, get_types_from_msg
from rosbags.typesys.store import Typestore

from wm_vla.data.bags.typestore import bag_typestore
from wm_vla.data.errors import BagMessageError, BagOpenError, BagTopicError

log = logging.getLogger(__name__)


def normalize_type(name: str) -> str:
    """'pkg/Type' (ROS 1 / mcap-ros2 style) -> 'pkg/msg/Type'; ROS 2 names pass through."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


@dataclass
class BagIssues:
    """Counted problems of one read (kind -> count) with the first example of each kind."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, example: str, n: int = 1) -> None:
        if not self.counts[kind]:
            log.warning("bag: %s: %s", kind, example)
        self.counts[kind] += n
        self.examples.setdefault(kind, example)

    def to_dict(self) -> dict[str, Any]:
        return {k: {"count": int(v), "example": self.examples.get(k, "")} for k, v in sorted(self.counts.items())}


@dataclass
class Record:
    """One message: `stamp_ns` from its header (log time when it has none or a zero stamp), `log_ns` bag time."""

    stamp_ns: int
    log_ns: int
    msg: Any


def header_stamp_ns(msg: Any) -> int | None:
    header = getattr(msg, "header", None)
    if header is None:
        return None
    ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return ns or None


class BagReader:
    """A bag opened for reading: `topics`, `read(topic)`; use as a context manager."""

    def __init__(self, path: str | Path, typestore: Typestore | None = None) -> None:
        self.path = Path(path)
        self.issues = BagIssues()
        if not self.path.exists():
            raise BagOpenError(f"{self.path}: no such bag")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises several types for broken files
            raise BagOpenError(f"{self.path}: cannot open as a ROS 2 bag (mcap or sqlite3): {exc}") from exc
        self.store = typestore or bag_typestore()
        self._known = self._register_bag_types(self._reader.connections)

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def _register_bag_types(self, connections: Iterable[Connection]) -> set[str]:
        """Register definitions carried by the bag for types our store lacks; return the decodable types."""
        extra: dict[str, Any] = {}
        for conn in connections:
            name = normalize_type(conn.msgtype)
            if name in self.store.types or conn.msgdef.format == MessageDefinitionFormat.NONE:
                continue
            try:
                if conn.msgdef.format == MessageDefinitionFormat.MSG:
                    extra.update(get_types_from_msg(conn.msgdef.data, name))
                else:
                    sep = "=" * 80 + "\n"
                    for part in conn.msgdef.data.split(sep):
                        if part.strip():
                            extra.update(get_types_from_idl(part.split("\n", 1)[1] if part.startswith("IDL: ") else part))
            except Exception as exc:  # a malformed definition makes only that type unknown
                self.issues.add("bad_type_definition", f"{conn.topic} ({conn.msgtype}): {exc}")
        if extra:
            try:
                self.store.register({k: v for k, v in extra.items() if k not in self.store.types})
            except Exception as exc:
                self.issues.add("bad_type_definition", str(exc))
        return {t for t in (normalize_type(c.msgtype) for c in self._reader.connections) if t in self.store.types}

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type (normalised) of every connection."""
        return {c.topic: normalize_type(c.msgtype) for c in self._reader.connections}

    def message_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for c in self._reader.connections:
            counts[c.topic] += int(c.msgcount)
        return dict(counts)

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(self._reader.end_time)

    def resolve(self, topic: str, types: tuple[str, ...] = ()) -> str | None:
        """The topic itself, else its `/compressed` sibling (image transport), if in the bag (and of `types`)."""
        for name in (topic, topic.rstrip("/") + "/compressed"):
            if name in self.topics and (not types or self.topics[name] in types):
                return name
        return None

    def require(self, topic: str, what: str) -> str:
        if topic not in self.topics:
            have = "\n  ".join(f"{t} [{m}]" for t, m in sorted(self.topics.items()))
            raise BagTopicError(f"{self.path}: no {what} topic {topic!r}; the bag has:\n  {have}")
        mtype = self.topics[topic]
        if mtype not in self._known:
            raise BagMessageError(f"{self.path}: topic {topic!r} has message type {mtype!r}, which is neither in the "
                                  "ROS 2 Kilted typestore, nor wm_vla_interfaces, nor defined in the bag")
        return topic

    def iter_records(self, topics: Iterable[str], decode: Callable[[str, int], bool] | None = None
                     ) -> Iterator[tuple[str, int, Record | None]]:
        """(topic, index in topic, record) in bag order; `decode(topic, index)` False yields no record (and costs no
        deserialisation).

        Unknown types, undecodable messages and a truncated tail are counted in `issues` and skipped.
        """
        wanted = set(topics)
        conns = [c for c in self._reader.connections if c.topic in wanted]
        for conn in conns:
            if normalize_type(conn.msgtype) not in self._known:
                self.issues.add("unknown_type", f"{conn.topic}: {conn.msgtype}", int(conn.msgcount) or 1)
        conns = [c for c in conns if normalize_type(c.msgtype) in self._known]
        index: Counter[str] = Counter()
        it = self._reader.messages(connections=conns)
        while True:
            try:
                conn, log_ns, raw = next(it)
            except StopIteration:
                return
            except Exception as exc:  # truncated chunk / corrupted database page: keep what was read
                self.issues.add("truncated", f"stopped reading after {sum(index.values())} messages: {exc}")
                return
            i = index[conn.topic]
            index[conn.topic] += 1
            if decode is not None and not decode(conn.topic, i):
                yield conn.topic, i, None
                continue
            try:
                msg = self.store.deserialize_cdr(raw, normalize_type(conn.msgtype))
            except Exception as exc:
                self.issues.add("undecodable", f"{conn.topic} message {i}: {exc}")
                continue
            yield conn.topic, i, Record(header_stamp_ns(msg) or int(log_ns), int(log_ns), msg)

    def read(self, topic: str) -> list[Record]:
        """All decodable messages of one topic, sorted by stamp (non-monotonic stamps are counted)."""
        return sort_by_stamp(topic, [r for _, _, r in self.iter_records([topic]) if r is not None], self.issues)


def sort_by_stamp(topic: str, records: list[Record], issues: BagIssues) -> list[Record]:
    """Stable sort by header stamp; stamps that go backwards in bag order are counted as `non_monotonic`."""
    back = sum(1 for a, b in zip(records, records[1:]) if b.stamp_ns < a.stamp_ns)
    if back:
        issues.add("non_monotonic_stamps", f"{topic}: {back} stamp(s) earlier than their predecessor", back)
        records = sorted(records, key=lambda r: r.stamp_ns)
    return records
