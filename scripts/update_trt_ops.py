"""Regenerate wm_vla/runtime/data/tensorrt_onnx_ops.json from onnx-tensorrt's docs/operators.md.

    git clone --branch 10.1-GA https://github.com/onnx/onnx-tensorrt
    python scripts/update_trt_ops.py onnx-tensorrt/docs/operators.md --ref 10.1-GA --commit $(git -C onnx-tensorrt rev-parse HEAD)

Review the opset range printed from the document's header before committing.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "wm_vla" / "runtime" / "data" / "tensorrt_onnx_ops.json"
# inputs that TensorRT requires to be build-time constants ("`axes` must be an initializer"), and since which
# opset that argument is an input rather than an attribute
CONST_INPUT_SINCE = {"Squeeze": 13, "Unsqueeze": 13, "Slice": 10, "Pad": 18, "ReduceSum": 13}


def parse(text: str) -> tuple[dict[str, dict[str, object]], int, int]:
    m = re.search(r"opset (\d+) to opset (\d+)", text)
    if not m:
        raise SystemExit("could not find the 'opset N to opset M' range in the document header")
    rows: dict[str, dict[str, object]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or not re.fullmatch(r"[A-Za-z0-9]+", cells[0]) \
                or cells[1] not in ("Y", "N"):
            continue
        restr = re.sub(r"<br\s*/>", " ", cells[3]).strip() if len(cells) > 3 else ""
        rows[cells[0]] = {"supported": cells[1] == "Y",
                          "types": [t.strip() for t in (cells[2] if len(cells) > 2 else "").split(",") if t.strip()],
                          "restrictions": restr}
    return rows, int(m.group(1)), int(m.group(2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("operators_md", type=Path)
    ap.add_argument("--ref", required=True, help="onnx-tensorrt tag, e.g. 10.1-GA")
    ap.add_argument("--commit", required=True)
    ap.add_argument("--tensorrt-version", default=None, help="default: the tag's numeric prefix")
    args = ap.parse_args()
    rows, lo, hi = parse(args.operators_md.read_text())
    const_inputs = {}
    for op, row in rows.items():
        r = str(row["restrictions"])
        if re.search(r"`axes` must be (an initializer|a constant tensor)", r):
            const_inputs[op] = {"input": 3 if op in ("Slice", "Pad") else 1, "name": "axes",
                                "since_opset": CONST_INPUT_SINCE.get(op, 18)}
        elif re.search(r"`axis` must be an initializer", r):
            const_inputs[op] = {"input": 1, "name": "axis", "since_opset": 1}
    data = {
        "source": {"repository": "https://github.com/onnx/onnx-tensorrt", "ref": args.ref, "commit": args.commit,
                   "path": "docs/operators.md",
                   "note": f"Operator support matrix of TensorRT's ONNX parser; the document states opsets {lo} to "
                           f"{hi}. Operators absent from the matrix are treated as unsupported."},
        "tensorrt_version": args.tensorrt_version or args.ref.split("-")[0],
        "opset_min": lo, "opset_max": hi,
        "supported": {op: {"types": row["types"], **({"restrictions": row["restrictions"]} if row["restrictions"] else {})}
                      for op, row in sorted(rows.items()) if row["supported"]},
        "unsupported": sorted(op for op, row in rows.items() if not row["supported"]),
        "constant_inputs": const_inputs,
        "first_output_only": {op: str(rows[op]["restrictions"]) for op in ("LayerNormalization", "MaxPool") if op in rows},
    }
    lines = ["{"]
    items = list(data.items())
    for i, (key, value) in enumerate(items):
        end = "," if i < len(items) - 1 else ""
        if key == "supported":
            inner = [f"  {json.dumps(op)}: {json.dumps(v)}" for op, v in value.items()]  # type: ignore[union-attr]
            lines.append(f"  {json.dumps(key)}: {{\n  " + ",\n  ".join(inner) + f"\n  }}{end}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{end}")
    lines.append("}")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}: {len(data['supported'])} supported, {len(data['unsupported'])} unsupported, opsets {lo}-{hi}")


if __name__ == "__main__":
    main()
