# Two commands do everything on a fresh clone:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= outputs/demo

.PHONY: setup demo test test-fast clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m wm_vla.cli demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest

# Skips the slow tests (expert success over 40 seeds, 50-episode collection).
test-fast: setup
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf build outputs $(VENV)
