"""Typed exceptions of the training package."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class for training errors."""


class DatasetFeatureError(TrainingError, ValueError):
    """A dataset lacks a feature the model needs, or has one of the wrong shape."""


class TrainingConfigError(TrainingError, ValueError):
    """A training configuration that cannot run (inconsistent sizes or options)."""
