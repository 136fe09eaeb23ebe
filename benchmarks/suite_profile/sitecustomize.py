"""Per-process timing hook for ``benchmarks/suite_profile.py`` (inert unless $FETAL_SSL_JAX_SUITE_PROFILE is set).

That script puts this folder on PYTHONPATH, so every Python process of the test run (both pytest workers and
every CLI subprocess they start) loads it. Once a process imports ``jax.monitoring``, JAX's own monitoring
events are appended as JSON lines to the file $FETAL_SSL_JAX_SUITE_PROFILE names: each program's compile (or
persistent-cache load) with its wall and process CPU seconds, each trace and lowering; at exit the process's
CPU seconds. $PYTEST_CURRENT_TEST, which subprocesses inherit from the worker, names the test.
"""
import atexit
import json
import os
import resource
import sys
import threading
import time

_LOG = os.environ.get("FETAL_SSL_JAX_SUITE_PROFILE")
_lock = threading.Lock()
_local = threading.local()

COMPILE = "/jax/core/compile/backend_compile_duration"
TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
HIT = "/jax/compilation_cache/cache_hits"


def _write(rec: dict) -> None:
    rec.update(pid=os.getpid(), test=os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
               argv=" ".join(sys.argv[:3])[:160])
    with _lock, open(_LOG, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _on_scalar(key, value, **kw):
    if key == COMPILE:  # the compile's start (dispatch.log_elapsed_time)
        _local.cpu0, _local.hit = _cpu(), False


def _on_event(key, **kw):
    if key == HIT:
        _local.hit = True


def _on_duration(key, secs, **kw):
    if key == COMPILE:
        cpu = _cpu() - getattr(_local, "cpu0", _cpu())
        _write(dict(kind="compile", name=str(kw.get("fun_name", "")), s=secs, cpu=cpu,
                    hit=bool(getattr(_local, "hit", False))))
    elif key in (TRACE, LOWER):
        _write(dict(kind="trace" if key == TRACE else "lower", s=secs))


def _register() -> None:
    import jax.monitoring as m
    m.register_scalar_listener(_on_scalar)
    m.register_event_listener(_on_event)
    m.register_event_duration_secs_listener(_on_duration)


class _AfterJaxMonitoring:
    """Registers the listeners right after ``jax.monitoring`` is first imported (never imports JAX itself)."""

    def find_spec(self, name, path, target=None):
        if name != "jax.monitoring":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _register()
        spec.loader.exec_module = exec_module
        return spec


if _LOG:
    atexit.register(lambda: _write(dict(kind="exit", cpu=_cpu(), wall=time.time() - _T0)))
    _T0 = time.time()
    sys.meta_path.insert(0, _AfterJaxMonitoring())
