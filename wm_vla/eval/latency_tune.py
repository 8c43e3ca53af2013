"""`wm-vla latency tune`: measure the search space on this machine, pick the best configuration within the budget.

1. Search space from the device profile (backends, precisions) x K x steps x execution horizon (`solver`).
2. Measure every (backend, precision, K, steps) with the profiler (interleaved), or take the rows of an earlier
   `wm-vla latency profile` JSON (`measurements`).
3. Judge every candidate against the budget (with the device's margin), the chunk duration and memory; rank the
   fitting ones by expected quality (eval results, else the proxy).
4. Re-measure the winner alone; if its re-measured p99 no longer fits, reject it (saying so) and try the next one.
5. Write the params YAML for the nodes and a JSON report; no fitting configuration raises `BudgetError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from wm_vla.eval.latency_profile import ProfileConfig, run_profile
from wm_vla.runtime.errors import BackendUnavailableError, BudgetError, LatencyConfigError
from wm_vla.runtime.latency.devices import DeviceProfile
from wm_vla.runtime.latency.solver import QualityModel, Verdict, judge, ranked, search_space

MAX_VERIFY = 3


@dataclass
class TuneConfig:
    budget_ms: float | None                 # None: the device profile's default budget
    device: DeviceProfile
    policy: str
    wm: str | None = None
    wm_encoder: str | None = None           # the policy whose latent the world model ranks in (None: the acting one's)
    robot: str = "sim"
    ks: tuple[int, ...] = (1, 4, 16, 64)
    steps: tuple[int, ...] = (4, 8, 10)
    exec_horizons: tuple[int, ...] = (4, 8)
    decisions: int = 100                    # per configuration in the search
    verify_decisions: int = 300             # re-measurement of the chosen configuration
    eval_files: tuple[str, ...] = ()
    measurements: str | None = None         # a `latency profile` JSON instead of measuring the search space
    onnx_cache: str = "outputs/latency/exports"
    progress: bool = True


def backend_availability(device: DeviceProfile) -> dict[str, str | None]:
    """None for each backend that can run here on the device's kind of hardware, else why not."""
    import torch

    gpu = device.kind != "cpu"
    out: dict[str, str | None] = {}
    for b in device.backends:
        if b == "tensorrt":
            try:
                from wm_vla.runtime.backends.trt_backend import cuda_device, import_tensorrt

                import_tensorrt()
                cuda_device()
                out[b] = None
            except BackendUnavailableError as exc:
                out[b] = str(exc)
        elif gpu and b == "torch":
            out[b] = None if torch.cuda.is_available() else "torch sees no CUDA device"
        elif gpu and b == "onnxruntime":
            import onnxruntime

            out[b] = None if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else (
                "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
        else:
            out[b] = None
    return out


def _profile_rows(report: dict[str, Any]) -> dict[tuple[str, str, int, int], dict[str, float]]:
    try:
        return {(r["backend"], r["precision"], int(r["k"]), int(r["steps"])):
                {"p99": float(r["decision_ms"]["p99"]), "p50": float(r["decision_ms"]["p50"]),
                 "rss": float(r["memory_after_load"]["peak_rss_mb"])} for r in report["rows"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise LatencyConfigError(f"not a `wm-vla latency profile` report: {type(exc).__name__}: {exc}") from exc


def _measure(cfg: TuneConfig, keys: list[tuple[str, str, int, int]], decisions: int) -> dict[tuple[str, str, int, int],
                                                                                            dict[str, float]]:
    """Profile the given (backend, precision, K, steps) combinations, interleaved in one run."""
    out: dict[tuple[str, str, int, int], dict[str, float]] = {}
    backends = tuple(dict.fromkeys(k[0] for k in keys))
    for b in backends:  # one profile run per backend+precision set; K and steps as a grid, extra cells discarded
        sub = [k for k in keys if k[0] == b]
        precisions = tuple(dict.fromkeys(k[1] for k in sub))
        pc = ProfileConfig(policy=cfg.policy, wm=cfg.wm, wm_encoder=cfg.wm_encoder, robot=cfg.robot, backends=(b,),
                           precisions={b: precisions},
                           ks=tuple(sorted({k[2] for k in sub})), steps=tuple(sorted({k[3] for k in sub})),
                           decisions=decisions, device="cpu" if cfg.device.kind == "cpu" else "cuda",
                           threads=cfg.device.threads or None, onnx_cache=cfg.onnx_cache, progress=cfg.progress)
        rows = _profile_rows(run_profile(pc))
        out.update({k: v for k, v in rows.items() if k in sub})
    return out


def tune(cfg: TuneConfig) -> dict[str, Any]:
    """Search, judge, verify: the report (chosen config, re-measured p99, every verdict); BudgetError if none fits."""
    from wm_vla.models.checkpoint import load_checkpoint

    device = cfg.device
    budget = float(cfg.budget_ms if cfg.budget_ms is not None else device.default_budget_ms)
    if not budget > 0:
        raise LatencyConfigError(f"--budget-ms must be positive, got {budget}")
    pcfg = load_checkpoint(Path(cfg.policy), expect="policy")[0].cfg
    quality = QualityModel.from_eval_files(cfg.eval_files, pcfg.denoise_steps, pcfg.horizon)
    candidates, skipped = search_space(device, cfg.ks, cfg.steps, cfg.exec_horizons, pcfg.horizon,
                                       backend_availability(device))
    if not candidates:
        raise BudgetError(f"nothing to search on {device.name} here: " + "; ".join(f"{w}: {why}" for w, why in skipped))
    keys = list(dict.fromkeys(c.measure_key for c in candidates))
    if cfg.measurements:
        try:
            table = _profile_rows(json.loads(Path(cfg.measurements).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise LatencyConfigError(f"{cfg.measurements}: cannot read the profile: {exc}") from exc
        source = f"profile {cfg.measurements}"
    else:
        table = _measure(cfg, keys, cfg.decisions)
        source = f"measured now, {cfg.decisions} decisions per configuration"
    verdicts = []
    for c in candidates:
        q, qsrc = quality.quality(c)
        m = table.get(c.measure_key)
        v = Verdict(c, q, qsrc)
        if m is None:
            v.reason = f"not in the measurements ({source})"
        else:
            v.p99_ms, v.p50_ms, v.peak_rss_mb = m["p99"], m["p50"], m["rss"]
        verdicts.append(v)
    judge(verdicts, budget, device, float(pcfg.fps))
    chosen, verified = None, None
    tried = 0
    for v in ranked(verdicts):
        if tried == MAX_VERIFY:
            break
        tried += 1
        again = _measure(cfg, [v.candidate.measure_key], cfg.verify_decisions)[v.candidate.measure_key]
        check = replace(v, p99_ms=again["p99"], p50_ms=again["p50"], peak_rss_mb=again["rss"])
        judge([check], budget, device, float(pcfg.fps))
        if check.fits:
            chosen, verified = v, check
            break
        v.fits, v.reason = False, f"re-measured over {cfg.verify_decisions} decisions: {check.reason}"
    for v in verdicts:
        if v.fits and v is not chosen:
            v.reason = "fits, lower expected quality than the chosen configuration" if chosen else "fits, not verified"
    report: dict[str, Any] = {
        "budget_ms": budget, "device": device.name, "margin": device.budget_margin, "measurements": source,
        "skipped": [{"what": w, "reason": why} for w, why in skipped],
        "verdicts": [v.to_json() for v in verdicts], "caveats": list(device.caveats),
        "policy": cfg.policy, "wm": cfg.wm, "wm_encoder": cfg.wm_encoder, "robot": cfg.robot,
        "policy_rate_hz": pcfg.fps,
    }
    if chosen is None or verified is None:
        fastest = min((v for v in verdicts if v.p99_ms is not None), key=lambda v: v.p99_ms or 0.0, default=None)
        hint = ""
        if fastest is not None and fastest.p99_ms is not None:
            hint = (f"; the fastest configuration ({fastest.candidate.label}) has p99 {fastest.p99_ms:.1f} ms, so the "
                    f"budget must be at least {fastest.p99_ms * (1 + device.budget_margin):.1f} ms")
        report["chosen"] = None
        raise BudgetError(f"no configuration fits a {budget:g} ms budget on {device.name} (margin "
                          f"{device.budget_margin:.0%}){hint}", report)
    report["chosen"] = {**chosen.to_json(), "verified_p99_ms": verified.p99_ms, "verified_p50_ms": verified.p50_ms,
                        "verify_decisions": cfg.verify_decisions,
                        "onnx_dir": str(Path(cfg.onnx_cache) / f"steps{chosen.candidate.steps}")}
    if cfg.wm_encoder and cfg.wm:  # world_model_node runs the encoder's export (`latency profile` wrote it there)
        report["chosen"]["wm_onnx_dir"] = str(Path(cfg.onnx_cache) / "wm_encoder")
    return report


def params_yaml(report: dict[str, Any], threads: int) -> str:
    """ROS 2 params file for vla_node and world_model_node (what `robot.launch.py` / `wm-vla up` load)."""
    c = report["chosen"]
    onnx = c["onnx_dir"] if c["backend"] != "torch" else ""
    # ranking with a wm_encoder: world_model_node runs that encoder's export and both nodes name it; "none" otherwise
    # (as `wm-vla up` without ranking), so that the nodes do not pair the shipped world model with the shipped encoder
    ranks_in_encoder = bool(report.get("wm_encoder")) and c["k"] > 1
    encoder = report["wm_encoder"] if ranks_in_encoder else "none"
    wm_onnx = c.get("wm_onnx_dir", onnx) if ranks_in_encoder and onnx else onnx
    # names are the nodes' declared parameters (vla_node.node.PARAMETERS, world_model_node.node.PARAMETERS);
    # precision is that of the export in onnx_dir; denoise_steps also reaches torch (vla_node checks an export's)
    vla = {"backend": c["backend"], "onnx_dir": onnx, "policy": report["policy"], "threads": threads, "k": c["k"],
           "denoise_steps": int(c["steps"]), "decision_period_s": round(c["exec_horizon"] / report["policy_rate_hz"], 6),
           "wm_encoder": encoder}
    wm = {"backend": c["backend"], "onnx_dir": wm_onnx, "policy": report["policy"], "world_model": report["wm"] or "",
          "wm_encoder": encoder,
          "threads": threads, "rank": c["k"] > 1, "budget_ms": float(report["budget_ms"]),
          "budget_k_levels": [c["k"], *(k for k in (64, 16, 8, 4) if k < c["k"])] if c["k"] > 1 else [1]}
    header = (f"# wm-vla latency tune: {report['device']}, budget {report['budget_ms']:g} ms (margin "
              f"{report['margin']:.0%}); chosen {c['backend']} {c['precision']} K={c['k']} steps={c['steps']} "
              f"exec_horizon={c['exec_horizon']}\n# search p99 {c['p99_ms']:.1f} ms, re-measured p99 "
              f"{c['verified_p99_ms']:.1f} ms over {c['verify_decisions']} decisions; quality {c['quality']:.3f} "
              f"({c['quality_source']})\n")
    return header + yaml.safe_dump({"vla_node": {"ros__parameters": vla},
                                    "world_model_node": {"ros__parameters": wm}}, sort_keys=False)


def print_verdicts(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    for s in report["skipped"]:
        console.print(f"  skipped {s['what']}: {s['reason']}")
    table = Table(title=f"budget {report['budget_ms']:g} ms on {report['device']} (margin {report['margin']:.0%}); "
                        f"latencies: {report['measurements']}")
    for col in ("backend", "prec", "K", "steps", "exec", "quality", "source", "p50", "p99", "verdict"):
        table.add_column(col, justify="left" if col in ("backend", "prec", "source", "verdict") else "right")
    chosen = report.get("chosen") or {}
    keys = ("backend", "precision", "k", "steps", "exec_horizon")
    for v in sorted(report["verdicts"], key=lambda v: -v["quality"]):
        mark = "CHOSEN" if chosen and all(chosen[k] == v[k] for k in keys) else v["reason"]
        table.add_row(v["backend"], v["precision"], str(v["k"]), str(v["steps"]), str(v["exec_horizon"]),
                      f"{v['quality']:.3f}", v["quality_source"], "-" if v["p50_ms"] is None else f"{v['p50_ms']:.1f}",
                      "-" if v["p99_ms"] is None else f"{v['p99_ms']:.1f}", mark)
    console.print(table)

