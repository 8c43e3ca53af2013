"""rclpy adapter: RealSense / ROS image topics / OpenCV -> synced, stamped Observation (perception_node.node)."""
