"""rclpy adapter: observation + instruction -> K candidate action chunks (vla_node.node)."""
