"""benchmarks/sched_trace.py: the wake-up chain and the sampler's CPU account it reads from a scheduler trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from script_helpers import load_script

SIM, PERC_DDS, PERC, WM, VLA_DDS, VLA, TIMER, SAMPLER = 100, 201, 200, 500, 301, 300, 302, 401


def _module() -> Any:
    return load_script("benchmarks/sched_trace.py")


def _threads(bench: Any) -> dict[int, Any]:
    T = bench.Thread
    return {SIM: T(SIM, SIM, "sim", "python"), PERC_DDS: T(PERC_DDS, PERC, "perception", "dds.shm.54411"),
            PERC: T(PERC, PERC, "perception", "python"), WM: T(WM, WM, "world_model", "python"),
            VLA_DDS: T(VLA_DDS, VLA, "vla_node", "dds.shm.54415"), VLA: T(VLA, VLA, "vla_node", "python"),
            SAMPLER: T(SAMPLER, 400, "sampler", "python")}


def _wake(ts: float, cpu: int, waker: int, woken: int, event: str = "sched_waking") -> str:
    return f"          python-{waker}     [{cpu:03d}] d..2.  {ts:.6f}: {event}: comm=python pid={woken} prio=120 " \
           f"target_cpu={cpu:03d}"


def _switch(ts: float, cpu: int, prev: int, nxt: int) -> str:
    return f"          python-{prev}     [{cpu:03d}] d..2.  {ts:.6f}: sched_switch: prev_comm=python prev_pid={prev} " \
           f"prev_prio=120 prev_state=S ==> next_comm=python next_pid={nxt} next_prio=120"


def _trace() -> str:
    """One decision: the sim publishes a frame on CPU 0 and keeps running 0.8 ms; perception's DDS thread hands it to
    its executor, which waits 1.1 ms behind world_model_node and the sim; vla_node (CPU 1) wakes the sampler, which runs 30 ms
    with one 0.5 ms interruption by vla_node."""
    return "\n".join([
        "# tracer: nop", "#",
        _switch(0.9990, 0, 0, SIM),
        _wake(1.0000, 0, SIM, PERC_DDS),
        _switch(1.0008, 0, SIM, PERC_DDS),
        _wake(1.0009, 0, PERC_DDS, PERC),
        _switch(1.0009, 0, PERC_DDS, WM),
        _switch(1.0019, 0, WM, SIM),
        _switch(1.0020, 0, SIM, PERC),
        _wake(1.0025, 0, PERC, VLA_DDS),
        _switch(1.0026, 1, 0, VLA_DDS),
        _wake(1.0027, 1, VLA_DDS, VLA),
        _switch(1.0028, 1, VLA_DDS, VLA),
        _wake(1.0028, 1, VLA, TIMER, "sched_wakeup_new"),  # a thread that comes and goes (not in the snapshot)
        _switch(1.0029, 1, VLA, TIMER),
        _wake(1.0029, 1, TIMER, VLA),
        _switch(1.0030, 1, TIMER, VLA),
        _wake(1.0030, 1, VLA, SAMPLER),
        _switch(1.0031, 1, VLA, SAMPLER),
        _switch(1.0200, 1, SAMPLER, VLA),
        _switch(1.0205, 1, VLA, SAMPLER),
        _switch(1.0331, 1, SAMPLER, 0),
        _switch(1.0400, 0, PERC, 0),
    ])


def test_the_chain_runs_back_from_the_sampler_to_the_sim_with_each_hops_wait_and_what_ran_meanwhile() -> None:
    bench = _module()
    result = bench.analyse(_trace(), _threads(bench))
    (hops,) = result["decisions"]
    assert [(h["waker"], h["woken"]) for h in hops] == [
        ("sim/python", "perception/dds.shm"), ("perception/dds.shm", "perception/python"),
        ("perception/python", "vla_node/dds.shm"), ("vla_node/dds.shm", "vla_node/python"),
        ("vla_node/python", "vla_node/python (new)"), ("vla_node/python (new)", "vla_node/python"),
        ("vla_node/python", "sampler/python")]
    assert [round(h["wait_ms"], 2) for h in hops] == [0.8, 1.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert [round(h["woken_ms"], 2) for h in hops] == [0.0, 0.9, 2.5, 2.7, 2.8, 2.9, 3.0]
    assert dict(hops[0]["meanwhile"]) == {"sim/python": 0.8}
    assert dict(hops[1]["meanwhile"]) == {"world_model/python": 1.0, "sim/python": 0.1}
    (cpu,) = result["sampler_cpu"]
    assert cpu["wall_ms"] == pytest.approx(30.1)
    assert cpu["sampler_ms"] == pytest.approx(29.5)
    assert cpu["vla_node/python"] == pytest.approx(0.6)  # 0.1 before the sampler first runs, 0.5 interrupting it
    summary = result["summary"]
    assert summary["sampler"]["others_on_its_cpu_ms_p50"] == pytest.approx(0.6)
    assert list(summary["hops"])[0] == "sim/python -> perception/dds.shm"


def test_a_thread_woken_while_it_still_runs_waits_for_nothing() -> None:
    bench = _module()
    ev = bench.parse("\n".join([_switch(1.000, 1, 0, VLA), _wake(1.002, 0, PERC, VLA), _switch(1.004, 1, VLA, 0)]))
    assert ev.running_at(VLA, 1.002) == 1
    assert ev.running_at(VLA, 1.005) is None
    assert ev.running_at(PERC, 1.002) is None  # never seen on a CPU


def test_a_task_the_trace_never_switched_in_runs_from_its_first_line_on_that_cpu() -> None:
    """Switches out of the idle task can be missing from a trace: the next line names who runs."""
    bench = _module()
    ev = bench.parse("\n".join([
        _switch(1.000, 1, VLA, 0),               # CPU 1 idles
        _wake(1.001, 0, PERC, VLA_DDS),           # perception wakes vla_node's DDS thread
        _wake(1.0013, 1, VLA_DDS, VLA),           # ... which is running on CPU 1 by now: no switch-in recorded
        _switch(1.0015, 1, VLA_DDS, VLA)]))
    assert ev.ins[VLA_DDS] == [(1.0013, 1)]
    assert ev.running_at(VLA_DDS, 1.0014) == 1
    assert (1.000, 1.0013, 0, 1) in ev.runs  # idle until then
    assert ev.outs[VLA_DDS] == [1.0015]


def test_a_saved_trace_is_analysed_again_and_a_folder_without_one_is_refused(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from dataclasses import asdict

    bench = _module()
    (tmp_path / "trace.txt").write_text(_trace())
    (tmp_path / "threads.json").write_text(json.dumps({t: asdict(th) for t, th in _threads(bench).items()}))
    assert bench.main(["--from", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "sched_trace.json").read_text())
    assert saved["summary"]["sampler"]["decisions"] == 1
    assert "sim/python -> perception/dds.shm" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bench.main(["--from", str(empty)]) == 2
    assert "no readable trace.txt + threads.json" in capsys.readouterr().err


def test_a_trace_without_a_sampler_or_without_a_decision_is_refused() -> None:
    bench = _module()
    threads = {k: v for k, v in _threads(bench).items() if v.role != "sampler"}
    with pytest.raises(bench.TraceError, match="no sampler process"):
        bench.analyse(_trace(), threads)
    short = "\n".join(line for line in _trace().splitlines() if "1.0200" not in line and "1.0205" not in line
                      and "1.0331" not in line)  # the sampler starts and never runs 5 ms
    with pytest.raises(bench.TraceError, match="no sampler process|no decision"):
        bench.analyse(short, _threads(bench))
    with pytest.raises(bench.TraceError):
        bench.analyse("garbage\nnot a trace line\n", _threads(bench))


def test_snapshot_names_the_stacks_threads_and_vla_nodes_child_process_the_sampler(tmp_path: Path) -> None:
    bench = _module()

    def proc(pid: int, ppid: int, args: list[str], threads: dict[int, str]) -> None:
        d = tmp_path / str(pid)
        (d / "task").mkdir(parents=True)
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
        (d / "stat").write_text(f"{pid} (py thon) S {ppid} 1 1 0")
        for tid, comm in threads.items():
            (d / "task" / str(tid)).mkdir()
            (d / "task" / str(tid) / "comm").write_text(comm + "\n")

    proc(10, 1, ["python", "-m", "vla_node.node", "--ros-args"], {10: "python", 11: "dds.shm.7004"})
    proc(20, 10, ["python", "-c", "from multiprocessing.spawn import spawn_main"], {20: "python"})
    proc(30, 1, ["python", "-m", "sim_node.node"], {30: "python", 31: "llvmpipe-0"})
    proc(40, 1, ["bash"], {40: "bash"})
    (tmp_path / "self").mkdir()
    threads = bench.snapshot(tmp_path)
    assert {t: (th.role, bench.thread_kind(th.comm)) for t, th in threads.items()} == {
        10: ("vla_node", "python"), 11: ("vla_node", "dds.shm"), 20: ("sampler", "python"), 30: ("sim", "python"),
        31: ("sim", "llvmpipe")}
