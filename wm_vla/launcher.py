"""`wm-vla up` without system ROS: run a bringup plan as one subprocess per node (`python -m <module>`), with the
same `--ros-args` (node name, params file, remappings) that launch_ros passes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from wm_vla.bringup import NodeSpec, params_yaml, ros_args
from wm_vla.cpus import node_environment


class Stack:
    """Start the plan's nodes on enter, stop them (SIGINT, then SIGTERM/SIGKILL) on exit; logs go to `log_dir`."""

    def __init__(self, plan: list[NodeSpec], log_dir: Path | None = None, env: dict[str, str] | None = None,
                 quiet: bool = True) -> None:
        self.skipped = [n.name for n in plan if n.external]  # other packages' nodes need ros2 launch
        # one BLAS/OpenMP thread per node unless the caller set it (wm_vla.cpus): no oversubscribed thread pools
        self.plan, self.env = [n for n in plan if not n.external], {**os.environ, **node_environment(), **(env or {})}
        root = str(Path(__file__).resolve().parents[1])  # the checkout holding the node packages
        path = self.env.get("PYTHONPATH", "")
        if root not in path.split(os.pathsep):
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in (root, path) if p)
        self.quiet = quiet
        self._tmp = tempfile.TemporaryDirectory(prefix="wm_vla_up_")
        self.log_dir = Path(log_dir) if log_dir else Path(self._tmp.name)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, spec: NodeSpec) -> list[str]:
        path = Path(self._tmp.name) / f"{spec.name}.yaml"
        path.write_text(params_yaml(spec))
        return [sys.executable, "-m", spec.module, *ros_args(spec, path)]

    def __enter__(self) -> Stack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.plan:
            self.start(spec.name)
        return self

    def start(self, name: str) -> None:
        """(Re)start node `name` of the plan; a restarted node appends to its log."""
        spec = next((s for s in self.plan if s.name == name), None)
        if spec is None:
            raise KeyError(f"no node {name!r} in the plan ({[s.name for s in self.plan]})")
        if name in self.procs and self.procs[name].poll() is None:
            raise RuntimeError(f"node {name} is already running")
        out = open(self.log_dir / f"{spec.name}.log", "ab") if self.quiet else None  # noqa: SIM115
        self.procs[name] = subprocess.Popen(self.command(spec), env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT if out else None)

    def kill(self, name: str) -> int:
        """SIGKILL node `name` (a crash: no shutdown handlers run) and reap it; returns its exit code."""
        p = self.procs[name]
        p.kill()
        return p.wait()

    def failed(self) -> dict[str, int]:
        """Nodes that have exited, with their return codes."""
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system, s) each running node process, with its child processes (vla_node's sampler
        process), has used so far."""
        import psutil

        used = {}
        for name, p in self.procs.items():
            try:
                proc = psutil.Process(p.pid)
                t = proc.cpu_times()
                total = t.user + t.system
                for child in proc.children(recursive=True):
                    try:
                        t = child.cpu_times()
                        total += t.user + t.system
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue  # exited between the listing and the read
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            used[name] = total
        return used

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT every node (each shuts down cleanly: bags closed, robot held); a node still running after `timeout`
        gets SIGTERM, then SIGKILL 3 s later, each noted at the end of its log."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for name, p in self.procs.items():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._note(name, f"still running {timeout:g} s after SIGINT: SIGTERM")
                p.terminate()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    self._note(name, "still running 3 s after SIGTERM: SIGKILL (no shutdown handlers ran)")
                    p.kill()
                    p.wait()

    def _note(self, name: str, text: str) -> None:
        """A launcher's line in node `name`'s log (stderr when the nodes log to the terminal)."""
        line = f"[wm_vla.launcher] {name}: {text}\n"
        if not self.quiet:
            sys.stderr.write(line)
            return
        with open(self.log_dir / f"{name}.log", "a") as log:
            log.write(line)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._tmp.cleanup()

    def wait(self) -> int:
        """Block until a node exits or Ctrl-C; returns the first non-zero exit code (0 on Ctrl-C)."""
        try:
            while not self.failed():
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        return next((c for c in self.failed().values() if c), 0)
