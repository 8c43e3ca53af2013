"""rclpy adapter: ActionCandidates -> GPC-RANK -> executor -> safety filter -> robot commands (world_model_node.node)."""
