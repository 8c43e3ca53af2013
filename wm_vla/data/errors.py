"""Typed exceptions of the data package."""

from __future__ import annotations


class DataError(Exception):
    """Base class for dataset and bag errors."""


class DatasetExistsError(DataError, FileExistsError):
    """The output dataset directory already holds data."""


class DatasetLocationError(DataError, OSError):
    """The output location cannot be created or written."""


class DatasetFormatError(DataError, ValueError):
    """A dataset whose files are not what their names say (e.g. a pickle posing as parquet), or that lerobot
    cannot open."""


class BagError(DataError):
    """Base class of rosbag reading, alignment and writing errors."""


class BagOpenError(BagError, OSError):
    """The bag cannot be opened or read (missing, not a ROS 2 bag, truncated beyond recovery)."""


class BagTopicError(BagError, KeyError):
    """A required topic is not in the bag (or has no usable message)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BagMessageError(BagError, ValueError):
    """A message type is unknown to the typestore, or a message cannot be decoded or converted."""


class BagAlignmentError(BagError, ValueError):
    """Observations and commands cannot be aligned (no decision point within the allowed age)."""


class EpisodeSpecError(BagError, ValueError):
    """An episode split specification is malformed (ranges, gap, marker topic)."""


class BagWriteError(BagError, OSError):
    """A bag cannot be written (existing output, bad split settings, unknown message type)."""


class FrameError(DataError, ValueError):
    """A camera frame or state sample that cannot be used (bad encoding, size, stamp, or too old); `reason` is a
    short diagnostic key that nodes count."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RecorderError(DataError):
    """Base class of episode recording errors (the dataset on disk keeps its committed episodes)."""


class DatasetMismatchError(RecorderError, ValueError):
    """An existing dataset cannot take the new episodes: features (action/state dims, cameras) or fps differ."""


class DiskFullError(RecorderError, OSError):
    """No space left for the episode: it is discarded, the committed episodes are intact."""


class EpisodeStateError(RecorderError, RuntimeError):
    """An episode command that the recorder's state does not allow (e.g. stop while idle)."""


class MissingStreamError(RecorderError, ValueError):
    """A required stream (camera, state, action) has no usable sample, so no frame can be recorded."""
