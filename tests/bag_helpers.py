"""Test bags: the sim arm bag (rosbags writer), the same content re-written by a different writer
(mcap-ros2-support), and small hand-made bags."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from wm_vla.data.bags.simbag import SimBagConfig, record_sim_bag
from wm_vla.data.bags.typestore import bag_typestore


def sim_bag(root: Path, episodes: int = 2, image_size: int = 64, storage: str = "mcap", seed: int = 0
            ) -> tuple[Path, dict[str, Any]]:
    return record_sim_bag(SimBagConfig(out=root, episodes=episodes, image_size=image_size, storage=storage,
                                       seed=seed, gap_s=1.5))


def to_plain(msg: Any) -> Any:
    """A rosbags message object -> dicts / lists / bytes (what mcap-ros2-support's writer takes)."""
    if dataclasses.is_dataclass(msg):
        return {f.name: to_plain(getattr(msg, f.name)) for f in dataclasses.fields(msg) if f.name != "__msgtype__"}
    if isinstance(msg, np.ndarray):
        return msg.tobytes() if msg.dtype == np.uint8 else msg.tolist()
    if isinstance(msg, list):
        return [to_plain(x) for x in msg]
    return msg


def rewrite_with_mcap_ros2(src: Path, dst: Path, rename: dict[str, str]) -> Path:
    """Re-write every message of `src` into a bare .mcap with mcap-ros2-support (its own CDR encoder, schemas in
    'pkg/msg/Type' + ros2msg form), renaming topics."""
    from mcap.writer import CompressionType
    from mcap_ros2.writer import Writer

    store = bag_typestore()
    with open(dst, "wb") as f, Reader(src) as reader:
        writer = Writer(f, compression=CompressionType.NONE)
        schemas: dict[str, Any] = {}
        for conn, t, raw in reader.messages():
            if conn.msgtype not in schemas:
                schemas[conn.msgtype] = writer.register_msgdef(conn.msgtype,
                                                               store.generate_msgdef(conn.msgtype, ros_version=2)[0])
            msg = to_plain(store.deserialize_cdr(raw, conn.msgtype))
            writer.write_message(rename.get(conn.topic, conn.topic), schemas[conn.msgtype], msg, log_time=t,
                                 publish_time=t)
        writer.finish()
    return dst
