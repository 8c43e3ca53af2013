"""Teleoperation (ROS-free): device input -> device-independent motion command -> robot command.

Devices: joystick (`sensor_msgs/Joy` axes/buttons with a deadman), spacemouse (`geometry_msgs/Twist`), keyboard
keys, leader arm (`sensor_msgs/JointState`). Arms: Cartesian twist -> damped least-squares differential IK on the
URDF -> joint targets within limits + gripper; quadrupeds: body velocity within limits. `CommandMux` arbitrates
teleop vs policy (intervention)."""

from wm_vla.teleop.arm import ArmTeleop
from wm_vla.teleop.base import BaseTeleop
from wm_vla.teleop.errors import TeleopConfigError, TeleopError, TeleopInputError, TeleopStateError
from wm_vla.teleop.inputs import JoyMapping, KeyMapping, MotionCommand, leader_targets, twist_command
from wm_vla.teleop.mux import CommandMux

__all__ = ["ArmTeleop", "BaseTeleop", "CommandMux", "JoyMapping", "KeyMapping", "MotionCommand", "TeleopConfigError",
           "TeleopError", "TeleopInputError", "TeleopStateError", "leader_targets", "twist_command"]
