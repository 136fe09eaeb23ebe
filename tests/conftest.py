"""Test-wide setup: 4 fake CPU devices (for sharding tests) before JAX is imported."""
import os
import sys
import tempfile

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
# small: a tiny CLI run compiles ~70 (the step, init, metrics, checkpoint helpers), and caching the sub-second
# ones too cut a warm run from 10.1 to 8.4 s (2-core AMD EPYC). The pytest workers cache only programs that took
# 0.3 s or more: their thousands of eager ops stay in the worker's in-memory cache, no need to write each to disk.
JIT_CACHE = os.path.join(tempfile.gettempdir(), f"fetal-ssl-jax-test-jitcache-{os.getuid()}")
for _key, _value in (("JAX_COMPILATION_CACHE_DIR", JIT_CACHE), ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"),
                     ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")):
    os.environ.setdefault(_key, _value)

import jax  # noqa: E402

jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  max(0.3, float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])))


# Modules whose module-scoped fixture is expensive (a baseline CLI run, the paper-scale lowering, a simulated
# labelled store): all their tests go to one xdist worker, so the fixture is built once, not once per worker.
# Every other test is scheduled on its own (the best balance of 2 workers). xdist's own `--dist loadgroup`
# did not group anything with pytest 9.2 / xdist 3.8 here, and `--dist loadfile` binds every module to one
# worker, which balanced badly (one fresh-clone run: 878 s of CPU in 537 s of wall on 2 cores).
SHARED_FIXTURE_MODULES = frozenset({"test_export_lowering.py", "test_engine_cli.py", "test_reliability.py",
                                    "test_evaluate_frozen.py", "test_predict.py"})
_missing = [m for m in SHARED_FIXTURE_MODULES if not os.path.exists(os.path.join(ROOT, "tests", m))]
assert not _missing, f"tests/conftest.py SHARED_FIXTURE_MODULES names missing modules: {_missing}"


def pytest_collection_finish(session):
    """After every test module is imported: freeze those objects and collect less often, as the CLI does
    (fetal_ssl_jax/gc_tuning.py); the in-process tests trace ResNet steps too."""
    from fetal_ssl_jax import gc_tuning
    gc_tuning.tune()


def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "load":  # an explicit --dist mode keeps xdist's scheduler
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        """One work unit per module in SHARED_FIXTURE_MODULES, one per test otherwise (largest units first)."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if os.path.basename(module) in SHARED_FIXTURE_MODULES else nodeid

    return SharedFixtureScheduling(config, log)
