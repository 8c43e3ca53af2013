"""Typed exceptions of the runtime package."""

from __future__ import annotations


class RuntimeErrorBase(Exception):
    """Base class for runtime errors."""


class RankerError(RuntimeErrorBase, ValueError):
    """Candidates or latents of the wrong shape, or a world model that does not fit the policy."""
