"""The ROS 2 typestore for bags: Kilted's standard messages plus our wm_vla_interfaces, read from their .msg files."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from wm_vla.data.errors import BagMessageError

INTERFACES = "wm_vla_interfaces"


def interface_msg_dir() -> Path:
    """Where the .msg files of wm_vla_interfaces are: the checkout's ros2_ws, else an install's share/."""
    from wm_vla.robots.profiles import data_root

    candidates = [data_root() / "ros2_ws" / "src" / INTERFACES / "msg", Path(sys.prefix) / "share" / INTERFACES / "msg"]
    for path in candidates:
        if path.is_dir() and any(path.glob("*.msg")):
            return path
    raise BagMessageError(f"no {INTERFACES} .msg files found (looked in {', '.join(map(str, candidates))})")


@lru_cache(maxsize=1)
def bag_typestore() -> Typestore:
    """Kilted typestore with `wm_vla_interfaces/msg/*` registered (shared, built once)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(interface_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(encoding="utf-8"), f"{INTERFACES}/msg/{path.stem}"))
    store.register(types)
    return store
