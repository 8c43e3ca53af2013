"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# MuJoCo picks its GL backend at import: headless EGL for every test module, whatever it imports first.
os.environ.setdefault("MUJOCO_GL", "egl")

# --- ROS 2 test isolation (DESIGN §8) -----------------------------------------------------------
# Same-domain test processes receive each other's messages, and Kilted ignores ROS_LOCALHOST_ONLY.
# ROS tests request `ros_domain` BEFORE creating an rclpy context or starting a ROS subprocess.
_ROS_ISOLATION_VARS = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")


@pytest.fixture(scope="session")
def ros_domain() -> Iterator[int]:
    """Give this test process its own DDS domain (1..100, from the pid), localhost discovery only.

    Sets ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST in os.environ, so rclpy contexts
    created afterwards and subprocesses started afterwards (which inherit the environment) share
    this isolated domain. The previous values are restored at the end of the session.
    """
    saved = {name: os.environ.get(name) for name in _ROS_ISOLATION_VARS}
    domain_id = 1 + os.getpid() % 100
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    yield domain_id
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
