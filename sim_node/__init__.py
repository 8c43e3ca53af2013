"""rclpy adapter: a MuJoCo world (wm_vla.sim) behind the same ROS interfaces as the real robot."""
