"""Does rclpy's EventsExecutor work in this install? A check to re-run when the rclpy wheels change.

The nodes spin a `SingleThreadedExecutor`, whose wait-set rebuild in Python is part of the few milliseconds the
ROS path adds to a decision (docs/ros_stack.md). rclpy's C++ `rclpy.experimental.EventsExecutor` would cut it, if it
ran. Each executor is tried in a child process, in its own DDS domain: a 10 Hz timer, and a subscription fed at 10 Hz
by a publisher thread of the same process (as the nodes' worker threads publish). The child prints a line per
callback and per publish; after `--seconds` it is killed with SIGKILL, since a spin that holds the GIL ignores
SIGINT/SIGTERM.

    python benchmarks/events_executor_probe.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

CHILD = r"""
import sys, threading, time
import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

rclpy.init()
node = rclpy.create_node("events_executor_probe")
if sys.argv[1] == "events":
    from rclpy.experimental import EventsExecutor
    executor = EventsExecutor()
else:
    executor = SingleThreadedExecutor()
executor.add_node(node)
node.create_timer(0.1, lambda: print("timer", flush=True))
node.create_subscription(String, "probe", lambda _msg: print("message", flush=True), 10)
pub = node.create_publisher(String, "probe", 10)

def publish() -> None:
    while True:
        time.sleep(0.1)
        pub.publish(String(data="x"))
        print("published", flush=True)

threading.Thread(target=publish, daemon=True).start()
print("spinning", flush=True)
executor.spin()
"""


def probe(executor: str, seconds: float, domain: int, settle_s: float = 10.0) -> dict[str, int]:
    """Counts of each line the child printed in a window of `seconds` (the child is then SIGKILLed). The window opens
    once the child spins and its publisher thread has published once (on a loaded machine that thread can start
    seconds late), or after `settle_s` if it never does (an executor that holds the GIL)."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, executor], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    counts = {"timer": 0, "message": 0, "published": 0}
    started, publishing = threading.Event(), threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            word = line.strip()
            if word == "spinning":
                started.set()
            elif word in counts:
                counts[word] += 1
                if word == "published":
                    publishing.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started.wait(timeout=30.0)
    publishing.wait(timeout=settle_s)
    before = dict(counts)
    time.sleep(seconds)
    proc.kill()
    proc.wait()
    reader.join(timeout=5.0)
    return {word: n - before[word] for word, n in counts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="spin time per executor (default 3)")
    args = parser.parse_args(argv)
    expected = int(args.seconds / 0.1)
    print(f"callbacks in {args.seconds:g} s (expected ~{expected} of each)")
    print(f"{'executor':<18} {'timer':>6} {'message':>8} {'published':>10}")
    counts: dict[str, dict[str, int]] = {}
    for domain, executor in ((181, "single_threaded"), (182, "events")):
        counts[executor] = c = probe(executor, args.seconds, domain)
        print(f"{executor:<18} {c['timer']:>6} {c['message']:>8} {c['published']:>10}")

    def works(c: dict[str, int]) -> bool:
        return min(c.values()) >= expected // 2

    if not works(counts["single_threaded"]):
        print("the probe itself failed: SingleThreadedExecutor ran too few callbacks (is DDS working here?)")
        return 1
    print("EventsExecutor works here" if works(counts["events"])
          else "EventsExecutor does not work here: the nodes keep SingleThreadedExecutor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
