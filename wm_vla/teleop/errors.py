"""Typed exceptions of :mod:`wm_vla.teleop`; the teleop node turns them into a diagnostic and holds."""


class TeleopError(Exception):
    """Base class of every teleoperation error."""


class TeleopConfigError(TeleopError, ValueError):
    """A mapping or device configuration that cannot work (bad axis index, unknown key, unknown joint)."""


class TeleopInputError(TeleopError, ValueError):
    """A device message that cannot be used (too few axes/buttons, NaN, unknown joints): ignored, counted."""


class TeleopStateError(TeleopError, RuntimeError):
    """A command before the robot's state is known (teleop starts from the measured position)."""
