"""As-of alignment: for each query time, the latest message stamped at or before it (never a future one),
rejected when older than a bounded age."""

from __future__ import annotations

import numpy as np

from wm_vla.data.errors import BagAlignmentError


def asof_indices(stamps_ns: np.ndarray, query_ns: np.ndarray, max_age_ns: int) -> np.ndarray:
    """Index into sorted `stamps_ns` of the latest stamp <= each query and >= query - max_age; -1 where none."""
    stamps = np.asarray(stamps_ns, np.int64)
    query = np.asarray(query_ns, np.int64)
    if max_age_ns < 0:
        raise BagAlignmentError(f"max age must be >= 0, got {max_age_ns} ns")
    if stamps.size and np.any(np.diff(stamps) < 0):
        raise BagAlignmentError("as-of alignment needs stamps sorted in time")
    idx = np.searchsorted(stamps, query, side="right") - 1
    ok = idx >= 0
    ok[ok] = query[ok] - stamps[idx[ok]] <= max_age_ns
    return np.where(ok, idx, -1)
