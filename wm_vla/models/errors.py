"""Typed exceptions of the models package."""

from __future__ import annotations


class ModelError(Exception):
    """Base class for model errors."""


class ModelConfigError(ModelError, ValueError):
    """A model configuration that is malformed or inconsistent."""


class CheckpointError(ModelError, OSError):
    """A checkpoint that is missing, corrupt, unsafe, or does not match its configuration."""


class ObservationError(ModelError, ValueError):
    """An observation batch with missing keys or wrong shapes for this model."""
