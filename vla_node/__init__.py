"""rclpy adapter: observation + instruction -> K candidate action chunks (ActionCandidates).

Thin lifecycle node over wm_vla core objects; it arrives with issue #5 (ROS 2 stack).
"""
