# Two commands do all the set-up on a fresh clone:  `make demo`  and  `make test`.
# Each builds .venv from the pinned requirements when it is missing or stale.
# PLATFORM=cpu (default) | cuda | tpu picks the set: cpu = requirements.txt + the optional CPU extra
# requirements-cpu-fast.txt (oneDNN wheels, then the kernel is compiled); cuda/tpu = requirements-cuda.txt /
# requirements-tpu.txt, which install and compile nothing CPU-only. One venv holds one platform
# (`make clean-venv` before switching).
PYTHON   ?= python3
PLATFORM ?= cpu
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed-$(PLATFORM)
TEST_STAMP := $(VENV)/.installed-test
# 2 workers (2-core CI); tests/conftest.py keeps the tests of a module with an expensive module fixture on one
# worker (pytest_xdist_make_scheduler), so that fixture is built once.
PYTEST   := $(PY) -m pytest -n 2
REQS_cpu  := requirements.txt requirements-cpu-fast.txt
REQS_cuda := requirements-cuda.txt
REQS_tpu  := requirements-tpu.txt
REQS      := $(REQS_$(PLATFORM))
ifeq ($(REQS),)
$(error PLATFORM must be cpu, cuda or tpu, not '$(PLATFORM)')
endif

.PHONY: venv demo test test-extended test-fast test-xla test-nokernel test-avx2 test-conv-paths bench bench-accelerator clean-venv

# install_requirements.py: uv where it can (~5 s instead of pip's ~30 s), pip otherwise or with
# FETAL_SSL_JAX_INSTALLER=pip; the same pinned versions either way, pip's index settings honoured.
INSTALL  := $(PYTHON) install_requirements.py $(PY)

$(STAMP): $(REQS) install_requirements.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(INSTALL) $(addprefix -r ,$(REQS))
ifeq ($(PLATFORM),cpu)
	$(PY) -m fetal_ssl_jax.kernels.onednn   # CPU convolution kernel (optional: falls back to XLA's)
endif
	touch $(STAMP)

venv: $(STAMP)   # `make venv PLATFORM=cuda`: the environment alone (what the emitted cloud jobs run)

# Test-only packages (validating emitted Kubernetes/SkyPilot files), on top of the platform set.
$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(INSTALL) -r requirements-test.txt
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(PY) launch.py demo --workdir $(or $(WORKDIR),runs/demo)

test: $(TEST_STAMP)
	$(PYTEST) --durations=15 -m "not extended" tests

test-extended: $(TEST_STAMP)
	$(PYTEST) --durations=15 -m extended tests

test-fast: $(TEST_STAMP)
	$(PYTEST) -m "not slow" tests

# The suite under the other convolution configurations (every test must pass under each):
#   test-xla       XLA's own convolutions (FETAL_SSL_JAX_CONV=xla)
#   test-nokernel  a machine where the oneDNN kernel cannot be built (no C++ compiler, nothing cached)
#   test-avx2      an AVX-512 machine held to AVX2 kernels in oneDNN and XLA (what an AVX2-only CPU runs)
# test-conv-paths: the CI-cheap version, only the tests marked conv_paths, under the first two.
NOKERNEL_ENV = CXX=/nonexistent/c++ FETAL_SSL_JAX_KERNEL_DIR=$$(mktemp -d)
test-xla: $(TEST_STAMP)
	FETAL_SSL_JAX_CONV=xla $(PYTEST) --durations=15 -m "not extended" tests
test-nokernel: $(TEST_STAMP)
	$(NOKERNEL_ENV) $(PYTEST) --durations=15 -m "not extended" tests
test-avx2: $(TEST_STAMP)
	ONEDNN_MAX_CPU_ISA=AVX2 XLA_FLAGS="$(XLA_FLAGS) --xla_cpu_max_isa=AVX2" $(PYTEST) --durations=15 -m "not extended" tests
test-conv-paths: $(TEST_STAMP)
	FETAL_SSL_JAX_CONV=xla $(PYTEST) -m conv_paths tests
	$(NOKERNEL_ENV) $(PYTEST) -m conv_paths -rs tests

bench: $(STAMP)
	$(PY) benchmarks/train_step.py

# One GPU/TPU: the JAX vs PyTorch step, MFU, memory and host-pipeline figures as JSON (benchmarks/README.md).
bench-accelerator: $(STAMP)
	$(PY) benchmarks/accelerator.py --out $(or $(OUT),accel.json)

clean-venv:
	rm -rf $(VENV)
