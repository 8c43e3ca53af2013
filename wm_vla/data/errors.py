"""Typed exceptions of the data package."""

from __future__ import annotations


class DataError(Exception):
    """Base class for dataset and bag errors."""


class DatasetExistsError(DataError, FileExistsError):
    """The output dataset directory already holds data."""


class DatasetLocationError(DataError, OSError):
    """The output location cannot be created or written."""


class FrameError(DataError, ValueError):
    """A camera frame or state sample that cannot be used (bad encoding, size, stamp, or too old); `reason` is a
    short diagnostic key that nodes count."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
