# Two commands do everything on a fresh clone:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= outputs/demo

.PHONY: setup demo test test-e2e test-fast train-tiny models eval-tiny bench-latency soak clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m wm_vla.cli demo --out $(DEMO_OUT)

# Everything, including the whole-stack ROS tests (`e2e`: sim + perception + vla + world_model over DDS, `wm-vla demo`).
test: setup
	$(PY) -m pytest

# Only the whole-stack ROS tests (~2-4 min on 2 cores).
test-e2e: setup
	$(PY) -m pytest -m e2e

# Skips the slow tests (expert success over 40 seeds, 50-episode collection).
test-fast: setup
	$(PY) -m pytest -m "not slow and not e2e"

# The tiny CPU pipeline (collect, FLARE policy, the world models' FiLM encoder on the first 50 demonstrations, both
# policies' labelled candidates, teacher world model and distilled student in that encoder's latent with the
# relabelled demonstrations, lambda=0 ablation).
train-tiny: setup
	$(VENV)/bin/wm-vla train tiny --out outputs/tiny --ablation --wm-encoder-demos 50 --hindsight

# Regenerate the shipped checkpoints (wm_vla/models/weights/tiny) from scratch: the tiny pipeline, then the
# inference-only copies + sha256 manifest that `make demo`, the ROS stack and `wm-vla eval sim` use by default.
models: train-tiny
	$(VENV)/bin/wm-vla models ship --from outputs/tiny

# The headline table: single sample vs GPC-RANK K=4/16/64 vs oracle, 100 held-out arm episodes.
eval-tiny: setup
	$(VENV)/bin/wm-vla eval sim --world arm --episodes 100 --jobs 2 --teacher wm_vla/models/weights/tiny/wm_teacher --ablation-policy outputs/tiny/policy_flare0 --out outputs/tiny/eval_arm

# Decision latency of torch eager vs onnxruntime, K = 1/4/16/64, on the checkpoints of `make train-tiny`.
bench-latency: setup
	$(VENV)/bin/wm-vla latency bench --backends torch,onnxruntime --k 1,4,16,64 --iters 100 --out outputs/latency/cpu

# Reliability soak (issue #9): the sim stack for 30 min (30 Hz cameras, 50 Hz control, GPC-RANK on): RSS per node,
# deadline misses, dropped observations, success rate -> outputs/bench/soak_30min.{json,png}; exit 1 on a failed
# criterion. The 3-minute version runs in `make test-e2e` (tests/test_soak.py).
soak: setup
	$(PY) benchmarks/soak.py --minutes 30 --out outputs/bench/soak_30min

clean:
	rm -rf build outputs $(VENV)
