"""Where a decision's time goes between processes: a kernel scheduler trace of the running ROS stack.

`wm-vla demo` splits a decision into stages from message stamps; this looks under them. It records the kernel's
scheduler events (tracefs: `sched_waking`, `sched_wakeup_new`, `sched_switch`) for `--seconds` while the ranked stack
of a `wm-vla demo` runs, then, for each decision, follows who woke whom backwards from vla_node's sampler to the
sim's camera publish: for every hop, how long the woken thread waited for a CPU and what ran there meanwhile. It also
accounts for the sampler's CPU during each decision: its own running time and every other thread's on that CPU.

Needs Linux, root (tracefs) and the sampler in its own process (vla_node's default `inference_process: true`).

    python benchmarks/sched_trace.py --seconds 20 --out outputs/bench/sched_trace
    python benchmarks/sched_trace.py --attach --seconds 20     # a stack that is already running (`wm-vla up`)
    python benchmarks/sched_trace.py --from outputs/bench/sched_trace   # analyse a saved trace again
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
EVENTS = ("sched:sched_switch", "sched:sched_waking", "sched:sched_wakeup_new")
# module (from a node process's command line) -> the role shown in the tables
ROLES = {"sim_node.node": "sim", "perception_node.node": "perception", "vla_node.node": "vla_node",
         "world_model_node.node": "world_model", "sim_node.episodes": "episodes"}
LINE = re.compile(r"^\s*(?P<comm>.+?)-(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>[\d.]+): (?P<event>\w+): (?P<rest>.*)$")


class TraceError(RuntimeError):
    """No tracefs, not root, or no decision found in the trace."""


@dataclass
class Events:
    """Parsed scheduler events: per thread its wake-ups (time, waker) and switch-ins (time, cpu); per CPU what ran."""

    wakes: dict[int, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    ins: dict[int, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    outs: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    runs: list[tuple[float, float, int, int]] = field(default_factory=list)  # (start, end, tid, cpu)
    runs_of: dict[int, list[tuple[float, float, int]]] = field(default_factory=lambda: defaultdict(list))
    comms: dict[int, str] = field(default_factory=dict)
    parents: dict[int, int] = field(default_factory=dict)  # thread -> the thread that started it (while tracing)

    def running_at(self, tid: int, ts: float) -> int | None:
        """The CPU `tid` was running on at `ts`, if any (a thread woken before it went to sleep waits for nothing)."""
        runs = self.runs_of.get(tid, [])
        k = bisect.bisect_right(runs, (ts, float("inf"), 0)) - 1
        return runs[k][2] if k >= 0 and runs[k][0] <= ts < runs[k][1] else None


def parse(text: str) -> Events:
    """The tracefs `trace` text of the three EVENTS.

    Every event line also names the task running on its CPU. Where that task was not switched in by a recorded
    `sched_switch` (on the 2-vCPU VM, switches out of the idle task on one CPU were missing from the trace), it is
    taken to have started running at its first such line: an upper bound on its wait."""
    ev = Events()
    running: dict[int, tuple[float, int]] = {}

    def switch(cpu: int, ts: float, nxt: int) -> None:
        if cpu in running:
            start, tid = running[cpu]
            ev.runs.append((start, ts, tid, cpu))
            ev.runs_of[tid].append((start, ts, cpu))
            ev.outs[tid].append(ts)
        ev.ins[nxt].append((ts, cpu))
        running[cpu] = (ts, nxt)

    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ts, cpu, event, current = float(m["ts"]), int(m["cpu"]), m["event"], int(m["tid"])
        fields = dict(kv.split("=", 1) for kv in re.findall(r"(\w+=\S+)", m["rest"]))
        if running.get(cpu, (0.0, current))[1] != current:  # a switch the trace lacks
            switch(cpu, ts, current)
        if event in ("sched_waking", "sched_wakeup_new"):
            ev.wakes[int(fields["pid"])].append((ts, current))
            ev.comms.setdefault(int(fields["pid"]), fields.get("comm", "?"))
            if event == "sched_wakeup_new":
                ev.parents[int(fields["pid"])] = current
        elif event == "sched_switch":
            nxt = int(fields["next_pid"])
            ev.comms.setdefault(int(fields["prev_pid"]), fields["prev_comm"])
            ev.comms.setdefault(nxt, fields["next_comm"])
            switch(cpu, ts, nxt)
    for runs in ev.runs_of.values():
        runs.sort()
    for ins in ev.ins.values():
        ins.sort()
    for outs in ev.outs.values():
        outs.sort()
    return ev


@dataclass(frozen=True)
class Thread:
    tid: int
    pid: int
    role: str
    comm: str


def thread_kind(comm: str) -> str:
    """A thread's name without its instance numbers: dds.shm.54411 -> dds.shm, llvmpipe-1 -> llvmpipe."""
    return re.sub(r"[-.]?\d+$", "", comm)


def snapshot(proc: Path = Path("/proc")) -> dict[int, Thread]:
    """Every thread of the stack's processes, by tid. vla_node's sampler is its child process (role `sampler`)."""
    procs: dict[int, tuple[str, int]] = {}
    for p in proc.iterdir():
        if not p.name.isdigit():
            continue
        try:
            args = (p / "cmdline").read_bytes().split(b"\0")
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        role = next((r for mod, r in ROLES.items() if mod.encode() in args), "")
        procs[int(p.name)] = (role, ppid)
    threads: dict[int, Thread] = {}
    for pid, (role, ppid) in procs.items():
        if not role and procs.get(ppid, ("", 0))[0] == "vla_node":
            role = "sampler"
        if not role:
            continue
        try:
            tids = [int(t) for t in os.listdir(proc / str(pid) / "task")]
        except OSError:
            continue
        for tid in tids:
            try:
                comm = (proc / str(pid) / "task" / str(tid) / "comm").read_text().strip()
            except OSError:
                continue
            threads[tid] = Thread(tid, pid, role, comm)
    return threads


def label(tid: int, threads: dict[int, Thread], ev: Events) -> str:
    t = threads.get(tid)
    if t is not None:
        return f"{t.role}/{thread_kind(t.comm)}"
    parent = threads.get(ev.parents.get(tid, -1))
    if parent is not None:  # a thread that came and went while tracing (e.g. a timer thread)
        return f"{parent.role}/{thread_kind(ev.comms.get(tid, '?'))} (new)"
    return "idle" if tid == 0 else f"other/{thread_kind(ev.comms.get(tid, '?'))}"


def sampler_thread(threads: dict[int, Thread], ev: Events) -> int:
    """The sampler process's thread that runs longest (its main thread, which encodes and samples)."""
    busy = {t: sum(b - a for a, b, tid, _ in ev.runs if tid == t) for t, th in threads.items() if th.role == "sampler"}
    if not busy or max(busy.values()) <= 0:
        raise TraceError("no sampler process in the trace: is vla_node running with inference_process: true, "
                         "and did a decision happen while tracing?")
    return max(busy, key=lambda t: busy[t])


def decision_starts(ev: Events, sampler: int, min_run_s: float = 0.005, gap_s: float = 0.3) -> list[float]:
    """Wake-ups of the sampler that start a decision: followed by >= `min_run_s` of its running within 60 ms, at
    least `gap_s` after the previous decision's start."""
    runs = [(a, b) for a, b, tid, _ in ev.runs if tid == sampler]
    starts: list[float] = []
    for ts, _ in ev.wakes.get(sampler, []):
        if starts and ts - starts[-1] < gap_s:
            continue
        if sum(min(b, ts + 0.06) - a for a, b in runs if ts <= a < ts + 0.06) >= min_run_s:
            starts.append(ts)
    return starts


@dataclass(frozen=True)
class Hop:
    waker: str
    woken: str
    woken_ms: float        # when the wake-up happened, from the chain's first one
    wait_ms: float         # wake-up -> the woken thread runs
    cpu: int
    meanwhile: tuple[tuple[str, float], ...]  # what ran on that CPU while it waited (> 0.05 ms each)


def chain(ev: Events, threads: dict[int, Thread], sampler: int, start: float, max_hops: int = 12) -> list[Hop]:
    """Who woke whom, back from the sampler's wake-up at `start` to the first wake-up by the sim (or `max_hops`)."""
    raw: list[tuple[int, int, float, float, int]] = []  # (waker, woken, woken at, runs at, cpu)
    tid, ts = sampler, start
    for _ in range(max_hops):
        wakes = [w for w in ev.wakes.get(tid, []) if w[0] <= ts]
        if not wakes:
            break
        woken_at, waker = wakes[-1]
        ins = ev.ins.get(tid, [])
        k = bisect.bisect_left(ins, (woken_at, -1))
        runs_at, cpu = ins[k] if k < len(ins) else (woken_at, -1)
        on_cpu = ev.running_at(tid, woken_at)
        if on_cpu is not None:  # woken before it went to sleep: it runs on
            runs_at, cpu = woken_at, on_cpu
        raw.append((waker, tid, woken_at, runs_at, cpu))
        if label(waker, threads, ev).startswith("sim/") or waker == 0:
            break
        tid, ts = waker, woken_at
    raw.reverse()
    if not raw:
        return []
    origin = raw[0][2]
    hops = []
    for waker, woken, woken_at, runs_at, cpu in raw:
        meanwhile = Counter()
        for a, b, t, c in ev.runs:
            overlap = min(b, runs_at) - max(a, woken_at)
            if c == cpu and overlap > 0 and t != woken:
                meanwhile[label(t, threads, ev)] += 1e3 * overlap
        hops.append(Hop(label(waker, threads, ev), label(woken, threads, ev), 1e3 * (woken_at - origin),
                        1e3 * (runs_at - woken_at), cpu,
                        tuple((k, round(v, 2)) for k, v in meanwhile.most_common() if v > 0.05)))
    return hops


def sampler_cpu(ev: Events, threads: dict[int, Thread], sampler: int, start: float) -> dict[str, float]:
    """From the sampler's wake-up at `start` to its last switch-out within 80 ms: wall ms, its own running ms, and
    each other thread's running ms on its CPU(s)."""
    ends = [o for o in ev.outs.get(sampler, []) if start < o < start + 0.08]
    if not ends:
        return {}
    end = ends[-1]
    cpus = {c for a, b, t, c in ev.runs if t == sampler and b > start and a < end}
    use: Counter[str] = Counter()
    own = 0.0
    for a, b, t, c in ev.runs:
        overlap = min(b, end) - max(a, start)
        if c in cpus and overlap > 0:
            if t == sampler:
                own += 1e3 * overlap
            elif t != 0:
                use[label(t, threads, ev)] += 1e3 * overlap
    return {"wall_ms": 1e3 * (end - start), "sampler_ms": own, **{k: v for k, v in use.most_common()}}


def tracefs() -> Path:
    for path in TRACEFS:
        if (path / "trace").exists():
            return path
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS[0])], check=False, capture_output=True)
        if (TRACEFS[0] / "trace").exists():
            return TRACEFS[0]
    raise TraceError("tracefs is not available: run as root on Linux (it is mounted at /sys/kernel/tracing)")


def record(seconds: float, buffer_kb: int = 16384) -> str:
    """The scheduler events of `seconds`, as tracefs' text. Leaves tracing off, the event list empty and the buffer
    size as it found it."""
    t = tracefs()
    if not os.access(t / "tracing_on", os.W_OK):
        raise TraceError(f"{t} is not writable: run as root")
    (t / "tracing_on").write_text("0")
    (t / "trace").write_text("")
    old_buffer_kb = (t / "buffer_size_kb").read_text().split()[0]
    (t / "buffer_size_kb").write_text(str(buffer_kb))
    (t / "set_event").write_text("\n".join(EVENTS) + "\n")
    try:
        (t / "tracing_on").write_text("1")
        time.sleep(seconds)
        (t / "tracing_on").write_text("0")
        return (t / "trace").read_text()
    finally:
        (t / "tracing_on").write_text("0")
        (t / "set_event").write_text("")
        (t / "trace").write_text("")
        (t / "buffer_size_kb").write_text(old_buffer_kb)


def summarize(chains: list[list[Hop]], cpu: list[dict[str, float]]) -> dict[str, object]:
    """Per hop (waker -> woken), over the decisions whose chain has it: median wait and median time from the chain's
    start; and the sampler's median wall, own CPU and others' CPU per decision."""
    by_hop: dict[str, list[Hop]] = defaultdict(list)
    for hops in chains:
        for h in hops:
            by_hop[f"{h.waker} -> {h.woken}"].append(h)
    hops = {name: {"decisions": len(v), "wait_ms_p50": float(np.median([h.wait_ms for h in v])),
                   "wait_ms_max": float(np.max([h.wait_ms for h in v])),
                   "at_ms_p50": float(np.median([h.woken_ms for h in v]))} for name, v in by_hop.items()}
    others = [sum(v for k, v in c.items() if k not in ("wall_ms", "sampler_ms")) for c in cpu]
    return {"hops": dict(sorted(hops.items(), key=lambda kv: kv[1]["at_ms_p50"])),
            "sampler": {"decisions": len(cpu), "wall_ms_p50": float(np.median([c["wall_ms"] for c in cpu])),
                        "own_cpu_ms_p50": float(np.median([c["sampler_ms"] for c in cpu])),
                        "others_on_its_cpu_ms_p50": float(np.median(others))} if cpu else {}}


def analyse(text: str, threads: dict[int, Thread]) -> dict[str, object]:
    ev = parse(text)
    sampler = sampler_thread(threads, ev)
    starts = decision_starts(ev, sampler)
    if not starts:
        raise TraceError("no decision in the trace: trace longer, or while episodes run")
    chains = [chain(ev, threads, sampler, s) for s in starts]
    cpu = [c for c in (sampler_cpu(ev, threads, sampler, s) for s in starts) if c]
    return {"summary": summarize(chains, cpu), "decisions": [[asdict(h) for h in c] for c in chains],
            "sampler_cpu": cpu}


def print_report(result: dict[str, object], examples: int = 2) -> None:
    for hops in result["decisions"][:examples]:  # type: ignore[index]
        print("a decision, hop by hop (ms from the first wake-up):")
        for h in hops:
            meanwhile = ", ".join(f"{k} {v:.2f}" for k, v in h["meanwhile"][:3])
            print(f"  {h['woken_ms']:7.2f}  {h['waker']:24s} -> {h['woken']:24s} waits {h['wait_ms']:5.2f} on CPU "
                  f"{h['cpu']}" + (f"  (meanwhile {meanwhile})" if meanwhile else ""))
    summary = result["summary"]
    print(f"\nmedian over {len(result['decisions'])} decisions:")  # type: ignore[arg-type]
    print(f"  {'hop':52s} {'at':>7s} {'wait':>6s} {'max':>6s}")
    for name, h in summary["hops"].items():  # type: ignore[index]
        print(f"  {name:52s} {h['at_ms_p50']:7.2f} {h['wait_ms_p50']:6.2f} {h['wait_ms_max']:6.2f}  ({h['decisions']})")
    s = summary["sampler"]  # type: ignore[index]
    if s:
        print(f"  sampler per decision: wall {s['wall_ms_p50']:.2f} ms, its own CPU {s['own_cpu_ms_p50']:.2f} ms, "
              f"other threads on its CPU {s['others_on_its_cpu_ms_p50']:.2f} ms")


def start_demo(out: Path, demo_args: list[str], timeout_s: float = 300.0) -> subprocess.Popen[str]:
    """`wm-vla demo` in the background; returns once its ranked stack is starting."""
    cmd = [sys.executable, "-m", "wm_vla.cli", "demo", *demo_args, "--out", str(out / "demo")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if "ranked: starting" in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise TraceError(f"the demo did not start its ranked stack: {' '.join(cmd)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to trace")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds after the ranked stack starts (warm-up)")
    ap.add_argument("--attach", action="store_true", help="trace the stack that is running; start no demo")
    ap.add_argument("--demo-args", default="--backend onnxruntime --denoise-steps 7 --episodes 8",
                    help="arguments of the `wm-vla demo` this starts")
    ap.add_argument("--from", dest="saved", default=None,
                    help="analyse the trace.txt + threads.json an earlier run saved in this folder; trace nothing")
    ap.add_argument("--out", default="outputs/bench/sched_trace")
    args = ap.parse_args(argv)
    out = Path(args.saved or args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.saved:
            result = analyse(*load_saved(out))
        else:
            result = trace_stack(args, out)
    except TraceError as exc:
        print(f"sched_trace: {exc}", file=sys.stderr)
        return 2
    (out / "sched_trace.json").write_text(json.dumps(result, indent=1))
    print_report(result)
    print(f"\n{out / 'sched_trace.json'}, raw trace {out / 'trace.txt'}")
    return 0


def load_saved(folder: Path) -> tuple[str, dict[int, Thread]]:
    try:
        text = (folder / "trace.txt").read_text()
        threads = {int(t): Thread(**v) for t, v in json.loads((folder / "threads.json").read_text()).items()}
    except (OSError, ValueError, TypeError) as exc:
        raise TraceError(f"{folder}: no readable trace.txt + threads.json ({exc})") from exc
    return text, threads


def trace_stack(args: argparse.Namespace, out: Path) -> dict[str, object]:
    """Start the demo (unless --attach), trace, save trace.txt + threads.json in `out`, analyse."""
    tracefs()
    demo = None if args.attach else start_demo(out, args.demo_args.split())
    try:
        time.sleep(0 if args.attach else args.settle)
        threads = snapshot()
        if not any(t.role == "vla_node" for t in threads.values()):
            raise TraceError("no vla_node process is running: start a stack (`wm-vla up --robot sim` and episodes) "
                             "or leave out --attach")
        print(f"[sched_trace] tracing {args.seconds:.0f} s of scheduler events ({len(threads)} threads of the "
              f"stack's processes)", flush=True)
        text = record(args.seconds)
        print("[sched_trace] trace recorded", flush=True)
        threads.update(snapshot())  # threads started while tracing
    finally:
        if demo is not None:  # let it finish: its report is the same run's decision times
            assert demo.stdout is not None
            for line in demo.stdout:
                print(line, end="", flush=True)
            demo.wait()
    (out / "trace.txt").write_text(text)
    (out / "threads.json").write_text(json.dumps({t: asdict(th) for t, th in threads.items()}))
    return analyse(text, threads)


if __name__ == "__main__":
    sys.exit(main())
