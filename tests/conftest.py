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
