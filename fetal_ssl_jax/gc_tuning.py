"""Python garbage-collector settings for processes that trace JAX programs.

Tracing and lowering a jitted step allocate hundreds of thousands of short-lived container objects
(tracers, jaxpr equations, MLIR wrappers). With CPython's default thresholds (700, 10, 10) that runs a
young-generation collection every 700 net allocations, and each one also walks whatever the imports left in
generations 1 and 2 (jax, flax, optax, orbax, grain, scipy: millions of objects) whenever those fill up. Measured
on a 2-core AMD EPYC, a tiny pretraining run with its programs already in the compilation cache (so the
process is imports, tracing, lowering and 6 steps): 4.5-5.5 s with the defaults, 3.7-4.6 s with these
thresholds set at interpreter start (``launch.py pretrain --config configs/barlowtwins.py:tiny``, a fresh
venv, four runs each, peak memory unchanged at ~600 MB). The objects that live for the whole process (modules,
classes, the config) are moved out of the collector's view once (``gc.freeze``, after one full collection: ~0.1 s
once the pretraining imports are loaded), and collections run less often; cycles are still collected.
"""
from __future__ import annotations

import gc

# Young generation every 50k net allocations (default 700); a middle-generation pass every 20 young ones,
# a full pass every 100 middle ones (plus CPython's own rule: only when it would free a quarter of the heap).
THRESHOLDS = (50_000, 20, 100)


def tune() -> None:
    """Freeze what exists now (call after the imports) and collect less often. Idempotent."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
