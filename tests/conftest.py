"""Test-wide setup: 4 fake CPU devices (for sharding tests) before JAX is imported."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from xla_env import xla_flags_with_devices  # noqa: E402  (before JAX is imported)

# Keep the caller's XLA flags (e.g. --xla_cpu_max_isa=AVX2 to check an AVX-512 machine as an AVX2 one).
os.environ["XLA_FLAGS"] = xla_flags_with_devices(4, os.environ.get("XLA_FLAGS", ""))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# One persistent XLA compilation cache for the whole suite: both pytest workers and every CLI subprocess
# (they inherit this environment). Most tests build their jitted functions afresh (a new closure per call of
# pretrain(), fine-tune, ...), so without it JAX recompiles programs it compiled a test earlier; with it a
# repeated program is loaded (its tracing and lowering still run). A CLI subprocess caches every program, however
# small (tests/engine_helpers.env_with_devices); the pytest workers only those that took 0.3 s or more to compile:
# their thousands of eager ops stay in the worker's in-memory cache, no need to write each to disk.
from engine_helpers import JIT_CACHE  # noqa: E402

for _key, _value in (("JAX_COMPILATION_CACHE_DIR", JIT_CACHE), ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"),
                     ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")):
    os.environ.setdefault(_key, _value)

import jax  # noqa: E402

jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  max(0.3, float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])))
