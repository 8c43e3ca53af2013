"""Read ROS 2 bags (mcap or sqlite3 directories, or a bare .mcap file) with rosbags, tolerating bad bags.

Messages are deserialised with our typestore (Kilted + wm_vla_interfaces) plus any type definitions the bag
carries. Problems do not crash a read: undecodable messages, unknown types and a truncated tail are counted in
`BagIssues` and reported; only a bag that cannot be opened at all raises `BagOpenError`.
"""

from __future__ import annotations

import logging
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.highlevel import AnyReader
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


def recorder_parts(path: Path) -> list[Path]:
    """The parts of a split recording (`BagRecorder`: `<dir>/<name>_NNNN/` rosbag2 directories) when `path` is such
    a directory rather than a bag itself; empty otherwise. A part cut off before it closed (an mcap, no
    metadata.yaml: the recorder was killed) is listed too; `BagReader` recovers it."""
    if (path / "metadata.yaml").is_file() or not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and ((p / "metadata.yaml").is_file() or _cut_off(p)))


def _cut_off(part: Path) -> Path | None:
    """The mcap of a part that never closed (no metadata.yaml), else None."""
    return None if (part / "metadata.yaml").is_file() else _single_mcap(part)


class BagReader:
    """A bag opened for reading: `topics`, `read(topic)`; use as a context manager."""

    def __init__(self, path: str | Path, typestore: Typestore | None = None) -> None:
        self.path = Path(path)
        self.issues = BagIssues()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if not self.path.exists():
            raise BagOpenError(f"{self.path}: no such bag")
        try:
            self._reader = self._open(self.path)
        except Exception as exc:  # rosbags raises several types for broken files
            self._drop_tmp()
            mcap = _single_mcap(self.path)
            cut_off = any(k in str(exc).lower() for k in ("end magic", "footer", "metadata file"))  # no close()
            if mcap is None or not cut_off:
                raise BagOpenError(f"{self.path}: cannot open as a ROS 2 bag (mcap or sqlite3): {exc}") from exc
            try:
                self._reader = self._recover(mcap, exc)
            except BagOpenError as exc2:
                self._drop_tmp()
                raise BagOpenError(f"{self.path}: cannot open as a ROS 2 bag (mcap or sqlite3): {exc}; {exc2}") from exc2
        self.store = typestore or bag_typestore()
        self._known = self._register_bag_types(self._reader.connections)

    def _open(self, path: Path) -> Reader | AnyReader:
        parts = recorder_parts(path)
        if not parts:
            reader: Reader | AnyReader = Reader(path)
        else:  # AnyReader merges the parts in time; a cut-off part is read up to its last complete record
            kept = [self._salvage_part(mcap) if (mcap := _cut_off(p)) else p for p in parts]
            reader = AnyReader([p for p in kept if p is not None])
        reader.open()
        return reader

    def _salvage(self, mcap: Path) -> Path:
        """A copy (in a temporary directory) of a cut-off mcap holding its complete records; the loss is counted."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="wm_vla_bag_")
        fixed = Path(self._tmp.name) / f"{len(list(Path(self._tmp.name).iterdir())):04d}_{mcap.name}"
        kept, dropped = recover_mcap(mcap, fixed)
        with Reader(fixed):  # raises when nothing readable is left
            pass
        self.issues.add("truncated", f"{mcap.name}: no mcap footer (recording cut off); read {kept} complete "
                        f"record(s), dropped {dropped} trailing byte(s)")
        return fixed

    def _salvage_part(self, mcap: Path) -> Path | None:
        """`_salvage` for one part of a session: a part with nothing readable left (killed before its first chunk
        reached the disk) is left out, and counted, rather than failing the whole session."""
        try:
            return self._salvage(mcap)
        except Exception as exc:  # noqa: BLE001 - rosbags raises several types for a broken file
            self.issues.add("truncated", f"{mcap.name}: cut off before anything readable reached the disk ({exc}); "
                            f"{mcap.stat().st_size} byte(s) left out")
            return None

    def _recover(self, mcap: Path, exc: Exception) -> Reader | AnyReader:
        """An mcap without its footer or its bag's metadata.yaml (the recording was cut off before it closed): read its
        complete records, count the loss."""
        try:
            return self._open(self._salvage(mcap))
        except BagOpenError:
            raise
        except Exception as exc2:
            raise BagOpenError(f"{self.path}: truncated mcap ({exc}) and not recoverable: {exc2}") from exc2

    @property
    def rosbags_reader(self) -> Reader | AnyReader:
        """The open rosbags reader (every part of a session merged in time) for raw CDR access: `connections`,
        `start_time`, `messages(connections=..., start=...)`."""
        return self._reader

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()
        self._drop_tmp()

    def _drop_tmp(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

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
        if not conns:  # rosbags reads every connection when given none
            return
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


MCAP_MAGIC = b"\x89MCAP0\r\n"


def _single_mcap(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix == ".mcap" else None
    files = sorted(path.glob("*.mcap"))
    return files[0] if len(files) == 1 else None


def _records(data: bytes, pos: int) -> tuple[list[tuple[int, int, int]], int]:
    """Complete (op, start, end) records from `pos` on, stopping at an incomplete one, a footer or a data end."""
    out = []
    while pos + 9 <= len(data):
        op, size = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        end = pos + 9 + size
        if end > len(data) or op in (0x02, 0x0F):
            break
        out.append((op, pos, end))
        pos = end
    return out, pos


def recover_mcap(src: Path, dst: Path) -> tuple[int, int]:
    """Copy the complete records of a truncated mcap (and those inside an uncompressed chunk cut off midway) and
    close it with an empty footer (no summary, so readers scan it). Returns (records kept, bytes dropped)."""
    data = src.read_bytes()
    if not data.startswith(MCAP_MAGIC):
        raise BagOpenError(f"{src}: not an mcap file (bad magic)")
    records, pos = _records(data, len(MCAP_MAGIC))
    body, kept, dropped = bytearray(data[:pos]), len(records), len(data) - pos
    if pos + 9 + 28 + 4 <= len(data) and data[pos] == 0x06:  # a chunk cut off: salvage its complete records
        head = pos + 9 + 28
        name_len = struct.unpack_from("<I", data, head)[0]
        inner = head + 4 + name_len + 8
        if name_len == 0 and inner <= len(data):
            salvaged, inner_end = _records(data, inner)
            body += data[inner:inner_end]
            kept, dropped = kept + len(salvaged), len(data) - inner_end
    footer = bytes([0x02]) + struct.pack("<Q", 20) + struct.pack("<QQI", 0, 0, 0)
    dst.write_bytes(bytes(body) + footer + MCAP_MAGIC)
    return kept, dropped


def sort_by_stamp(topic: str, records: list[Record], issues: BagIssues) -> list[Record]:
    """Stable sort by header stamp; stamps that go backwards in bag order are counted as `non_monotonic`."""
    back = sum(1 for a, b in zip(records, records[1:]) if b.stamp_ns < a.stamp_ns)
    if back:
        issues.add("non_monotonic_stamps", f"{topic}: {back} stamp(s) earlier than their predecessor", back)
        records = sorted(records, key=lambda r: r.stamp_ns)
    return records
