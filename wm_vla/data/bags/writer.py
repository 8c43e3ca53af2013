"""`BagRecorder`: write ROS 2 bags with rosbags (mcap by default), split into parts by size and/or duration.

A node (or a test-bag generator) calls `write(topic, msgtype, msg, t_ns)` with typestore message objects
(see `wm_vla.data.bags.messages`). Parts are complete rosbag2 directories `<out>/<name>_<NNNN>/`; each reads on
its own (rosbags, rosbag2, mcap tools).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer

from wm_vla.data.bags.typestore import bag_typestore
from wm_vla.data.errors import BagWriteError

STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


@dataclass
class RecorderConfig:
    out: Path
    name: str = "wm_vla"
    storage: str = "mcap"
    split_bytes: int | None = None        # start a new part once this many payload bytes are in the current one
    split_duration_s: float | None = None  # ... or once a message is this much later than the part's first

    def validate(self) -> RecorderConfig:
        if self.storage not in STORAGE:
            raise BagWriteError(f"storage must be one of {', '.join(STORAGE)}, got {self.storage!r}")
        if self.split_bytes is not None and self.split_bytes <= 0:
            raise BagWriteError(f"split_bytes must be > 0, got {self.split_bytes}")
        if self.split_duration_s is not None and self.split_duration_s <= 0:
            raise BagWriteError(f"split_duration_s must be > 0, got {self.split_duration_s}")
        return self


class BagRecorder:
    """Append messages in time order; splits transparently. Use as a context manager (closes the last part)."""

    def __init__(self, config: RecorderConfig) -> None:
        self.cfg = config.validate()
        self.cfg.out = Path(self.cfg.out)
        if self.cfg.out.exists() and any(self.cfg.out.iterdir()):
            raise BagWriteError(f"{self.cfg.out}: output directory is not empty")
        self.store = bag_typestore()
        self.parts: list[Path] = []
        self._writer: Writer | None = None
        self._conns: dict[str, Any] = {}
        self._types: dict[str, str] = {}
        self._bytes = 0
        self._first_ns: int | None = None
        self.messages = 0

    def __enter__(self) -> BagRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_part(self) -> None:
        self.close()
        path = self.cfg.out / f"{self.cfg.name}_{len(self.parts):04d}"
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = Writer(path, version=9, storage_plugin=STORAGE[self.cfg.storage])
            self._writer.open()
        except Exception as exc:
            raise BagWriteError(f"{path}: cannot create bag: {exc}") from exc
        self.parts.append(path)
        self._conns, self._bytes, self._first_ns = {}, 0, None

    def write(self, topic: str, msgtype: str, msg: Any, t_ns: int) -> None:
        """Serialise and append one message with bag (log) time `t_ns`."""
        if msgtype not in self.store.types:
            raise BagWriteError(f"unknown message type {msgtype!r} for {topic}")
        if self._types.get(topic, msgtype) != msgtype:  # before serialising: the clear error, not a CDR one
            raise BagWriteError(f"{topic} was recorded as {self._types[topic]}, not {msgtype}")
        try:
            raw = self.store.serialize_cdr(msg, msgtype)
        except Exception as exc:
            raise BagWriteError(f"{topic}: cannot serialise {msgtype}: {exc}") from exc
        self.write_raw(topic, msgtype, bytes(raw), t_ns)

    def write_raw(self, topic: str, msgtype: str, raw: bytes, t_ns: int) -> None:
        """Append one message already serialised as CDR (e.g. from an rclpy `raw=True` subscription)."""
        if msgtype not in self.store.types:
            raise BagWriteError(f"unknown message type {msgtype!r} for {topic}")
        if self._types.setdefault(topic, msgtype) != msgtype:
            raise BagWriteError(f"{topic} was recorded as {self._types[topic]}, not {msgtype}")
        if self._writer is None or self._full(t_ns):
            self._open_part()
        assert self._writer is not None
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        try:
            self._writer.write(self._conns[topic], int(t_ns), raw)
        except OSError as exc:  # disk full (ENOSPC), file size limit (EFBIG), I/O error: parts already closed are kept
            self._abandon()
            raise self._failure("cannot write", exc) from exc
        self._first_ns = t_ns if self._first_ns is None else self._first_ns
        self._bytes += len(raw)
        self.messages += 1

    def _full(self, t_ns: int) -> bool:
        if self._first_ns is None:
            return False
        by_size = self.cfg.split_bytes is not None and self._bytes >= self.cfg.split_bytes
        by_time = self.cfg.split_duration_s is not None and t_ns - self._first_ns >= self.cfg.split_duration_s * 1e9
        return by_size or by_time

    def close(self) -> None:
        """Finish the current part (complete: it reads on its own and survives a later crash); a later `write`
        starts the next part, so a recorder can call this at every episode boundary."""
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as exc:
                self._abandon()
                raise self._failure("cannot finish the part", exc) from exc
            self._writer = None

    def _failure(self, what: str, exc: OSError) -> BagWriteError:
        return BagWriteError(f"{self.parts[-1]}: {what} ({exc.strerror or exc}); {self.messages} messages recorded, "
                             f"{len(self.parts) - 1} complete part(s) kept, this part reads back up to its last "
                             "complete record")

    def _abandon(self) -> None:
        """Drop the failed part's writer without writing its summary (there is no room for it)."""
        writer, self._writer = self._writer, None
        storage = getattr(writer, "storage", None)
        for name in ("bio", "conn", "db"):  # rosbags' mcap file object / sqlite3 connection
            handle = getattr(storage, name, None)
            try:
                if handle is not None:
                    handle.close()
            except Exception:  # noqa: BLE001 - the buffered tail cannot be flushed: dropped
                pass
