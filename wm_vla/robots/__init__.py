"""Robot descriptions (ROS-free): URDF models, kinematics and robot profiles."""

from .errors import KinematicsError, ProfileError, RobotError, UrdfError
from .kinematics import JointPositions, Kinematics
from .profiles import (
    ActionSpace,
    CameraSpec,
    ControllerSpec,
    RobotProfile,
    StateSpace,
    Topics,
    Workspace,
    data_root,
    load_profile,
    parse_profile,
)
from .urdf import Joint, JointLimits, Link, RobotModel, load_urdf, parse_urdf

__all__ = [
    "ActionSpace",
    "CameraSpec",
    "ControllerSpec",
    "Joint",
    "JointLimits",
    "JointPositions",
    "Kinematics",
    "KinematicsError",
    "Link",
    "ProfileError",
    "RobotError",
    "RobotModel",
    "RobotProfile",
    "StateSpace",
    "Topics",
    "UrdfError",
    "Workspace",
    "data_root",
    "load_profile",
    "load_urdf",
    "parse_profile",
    "parse_urdf",
]
