"""benchmarks/events_executor_probe.py: its child counts the callbacks of a working executor, so a zero means the
executor, not the probe."""

from __future__ import annotations

from script_helpers import load_script


def test_probe_counts_timer_and_subscription_callbacks_of_the_single_threaded_executor(ros_domain: int) -> None:
    probe = load_script("benchmarks/events_executor_probe.py").probe
    counts = probe("single_threaded", 1.5, ros_domain)
    assert counts["timer"] >= 7, counts
    assert counts["published"] >= 7, counts
    assert counts["message"] >= 5, counts
