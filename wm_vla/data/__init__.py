"""Data I/O: LeRobot datasets (and, later, rosbags)."""
