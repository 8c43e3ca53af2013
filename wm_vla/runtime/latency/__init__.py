"""Latency budgets: device profiles, the budget solver and the live governor (ROS-free; the nodes call them)."""

from wm_vla.runtime.latency.devices import DeviceProfile, known_devices, load_device, parse_device
from wm_vla.runtime.latency.governor import (
    Change,
    GovernorConfig,
    LatencyGovernor,
    Mode,
    governor_config_from_mapping,
    ladder,
)

__all__ = ["Change", "DeviceProfile", "GovernorConfig", "LatencyGovernor", "Mode", "governor_config_from_mapping",
           "known_devices", "ladder", "load_device", "parse_device"]
