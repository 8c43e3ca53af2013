"""recorder_node: observations + commanded actions -> crash-safe LeRobot dataset (thin rclpy adapter)."""
