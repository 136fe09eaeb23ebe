# Two commands do all the set-up on a fresh clone:  `make demo`  and  `make test`.
# Each builds .venv from the pinned requirements.txt when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench clean-venv

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m fetal_ssl_jax.kernels.onednn   # CPU convolution kernel (optional: falls back to XLA's)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) launch.py demo --workdir $(or $(WORKDIR),runs/demo)

test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" tests

bench: $(STAMP)
	$(PY) benchmarks/train_step.py

clean-venv:
	rm -rf $(VENV)
