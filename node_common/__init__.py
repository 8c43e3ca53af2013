"""Shared rclpy glue of the wm_vla nodes: msg <-> numpy, stamps, QoS profiles, /diagnostics, spinning."""
