"""Decision latency per backend and K (encode + sample K chunks + world-model rollout + GPC-RANK score).

Same measurement as `wm-vla latency bench`: every (backend, K, ranked) configuration of one run is measured in
the same process, interleaved in random order, on the same observation and noise, so ratios are meaningful.

    python benchmarks/decision_latency.py --backends torch,onnxruntime --k 1,4,16,64 --out outputs/latency/cpu
    python benchmarks/decision_latency.py --policy ckpt/policy --wm ckpt/wm_student --iters 200 --out FILE

Prints a table with the ratios (onnxruntime / torch eager, GPC-RANK / policy-only) and writes FILE.json + FILE.png.
"""

from __future__ import annotations

import sys

from wm_vla.cli import main

if __name__ == "__main__":
    sys.exit(main(["latency", "bench", *sys.argv[1:]]))
