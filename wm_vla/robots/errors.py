"""Typed exceptions of :mod:`wm_vla.robots`; nodes turn them into diagnostics."""


class RobotError(Exception):
    """Base class of every error raised by :mod:`wm_vla.robots`."""


class UrdfError(RobotError):
    """A URDF file or string is malformed or lacks required data."""


class ProfileError(RobotError):
    """A robot profile YAML is malformed or inconsistent with its URDF."""


class KinematicsError(RobotError):
    """A kinematic query the model cannot answer (unknown link/joint, bad joint vector)."""
