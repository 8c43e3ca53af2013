"""rclpy adapter of `wm-vla bag play`: publishes a bag's messages in real time (rate, loop, offset, remap, /clock)."""
