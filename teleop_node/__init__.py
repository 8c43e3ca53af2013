"""teleop_node: keyboard / joystick / spacemouse / leader-arm teleoperation (thin rclpy adapter of wm_vla.teleop)."""
