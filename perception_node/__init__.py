"""rclpy adapter: RealSense / ROS image topics / OpenCV -> synced, stamped Observation.

Thin node over wm_vla core helpers; it arrives with issue #5 (ROS 2 stack).
"""
