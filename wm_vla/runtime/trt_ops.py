"""Static check of ONNX graphs against TensorRT's ONNX-parser operator support list (no TensorRT needed).

The list lives in `wm_vla/runtime/data/tensorrt_onnx_ops.json`, parsed from onnx-tensorrt's docs/operators.md
(its source tag and commit are recorded in the file; regenerate with scripts/update_trt_ops.py). Checked:
the default-domain opset range, operators outside the standard domain, operators that are unsupported or not
listed, inputs that must be build-time constants ("`axes` must be an initializer"), and second outputs that
the parser does not produce (LayerNormalization's Mean/InvStdDev, MaxPool's Indices).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from wm_vla.runtime.errors import OnnxModelError, UnsupportedOperatorError

DATA = "tensorrt_onnx_ops.json"


@dataclass(frozen=True)
class Violation:
    graph: str
    node: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.graph}: {self.op_type} ({self.node or 'unnamed'}): {self.reason}"


@lru_cache(maxsize=1)
def support_list() -> dict[str, Any]:
    """The TensorRT ONNX operator support data (with its `source`)."""
    return json.loads(resources.files("wm_vla.runtime").joinpath("data", DATA).read_text())


def _load(model: Any) -> Any:
    import onnx

    if isinstance(model, (str, Path)):
        try:
            return onnx.load(str(model))
        except Exception as exc:  # noqa: BLE001 - protobuf decode errors are untyped
            raise OnnxModelError(f"cannot read ONNX model {model}: {exc}") from exc
    return model


def check_model(model: Any, name: str = "model") -> list[Violation]:
    """All TensorRT-parser violations of an ONNX model (a path or a loaded ModelProto)."""
    m = _load(model)
    data = support_list()
    out: list[Violation] = []
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not data["opset_min"] <= opset <= data["opset_max"]:
        out.append(Violation(name, "", "(model)", f"default-domain opset {opset} is outside TensorRT "
                                                 f"{data['tensorrt_version']}'s {data['opset_min']}-{data['opset_max']}"))
    constants = {i.name for i in m.graph.initializer}
    consumed: set[str] = set()
    nodes = list(_walk(m.graph))
    for node in nodes:
        consumed.update(node.input)
        if node.op_type == "Constant":
            constants.update(node.output)
    for node in nodes:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            out.append(Violation(name, node.name, op, f"custom domain {node.domain!r} is not in the ONNX standard set"))
        elif op in data["unsupported"]:
            out.append(Violation(name, node.name, op, "not supported by TensorRT's ONNX parser"))
        elif op not in data["supported"]:
            out.append(Violation(name, node.name, op, "not listed in TensorRT's ONNX operator support matrix"))
        need = data["constant_inputs"].get(op)
        if need and opset is not None and opset >= need["since_opset"] and len(node.input) > need["input"]:
            arg = node.input[need["input"]]
            if arg and arg not in constants:
                out.append(Violation(name, node.name, op, f"input `{need['name']}` must be a build-time constant "
                                                          f"(initializer), got the computed tensor {arg!r}"))
        if op in data["first_output_only"] and any(o and o in consumed for o in node.output[1:]):
            out.append(Violation(name, node.name, op, data["first_output_only"][op]))
    return out


def _walk(graph: Any) -> Any:
    """Nodes of a graph and of every subgraph (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _walk(attr.g)
            for g in attr.graphs:
                yield from _walk(g)


def check_export(onnx_dir: Path) -> dict[str, list[Violation]]:
    """Violations per graph of an export directory."""
    from wm_vla.runtime.export import load_export

    info = load_export(Path(onnx_dir))
    return {name: check_model(info.graph_path(name), name) for name in info.graph_names}


def require_supported(onnx_dir: Path) -> dict[str, int]:
    """Raise UnsupportedOperatorError listing every violation; returns the node count per graph when clean."""
    import onnx

    found = check_export(onnx_dir)
    bad = [str(v) for vs in found.values() for v in vs]
    if bad:
        src = support_list()["source"]
        raise UnsupportedOperatorError(f"{len(bad)} TensorRT ONNX-parser violation(s) (support list: onnx-tensorrt "
                                       f"{src['ref']}):\n  " + "\n  ".join(bad))
    from wm_vla.runtime.export import load_export

    info = load_export(Path(onnx_dir))
    return {name: len(onnx.load(str(info.graph_path(name))).graph.node) for name in found}
