"""Typed exceptions of the simulation package."""

from __future__ import annotations


class SimError(Exception):
    """Base class for simulation errors."""


class UnknownWorldError(SimError, ValueError):
    """A world name that is not registered."""


class UnknownTaskError(SimError, ValueError):
    """An instruction or task family the world does not support."""


class RenderError(SimError, RuntimeError):
    """Offscreen rendering is unavailable (no EGL/OSMesa GL context)."""


class ActionError(SimError, ValueError):
    """An action of the wrong shape or with non-finite values."""
