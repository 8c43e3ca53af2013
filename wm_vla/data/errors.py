"""Typed exceptions of the data package."""

from __future__ import annotations


class DataError(Exception):
    """Base class for dataset and bag errors."""


class DatasetExistsError(DataError, FileExistsError):
    """The output dataset directory already holds data."""


class DatasetLocationError(DataError, OSError):
    """The output location cannot be created or written."""
