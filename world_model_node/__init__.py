"""rclpy adapter: ActionCandidates -> GPC-RANK -> executor -> safety filter -> robot commands.

Thin lifecycle node over wm_vla.runtime; it arrives with issue #5 (ROS 2 stack).
"""
