"""wm_vla: world-model-ranked VLA control for ROS 2 robots (ROS-free core library)."""

__version__ = "0.1.0"
