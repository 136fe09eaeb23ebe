"""JAX's straight-line threefry lowering on CPU: same random bits, a fraction of the compile time.

``jax.random`` hashes with threefry2x32. On the CPU backend the pinned JAX (0.10.2) lowers each hash as
a rolled ``while`` loop over its five round groups; elsewhere it emits the same 20 rounds straight-line (or,
on CUDA, calls a kernel).
XLA:CPU compiles every loop's condition and body as kernels of their own, and the on-device augmentation
draws ~20 random values per sample (two views), so the rolled form was most of the augmentation's compile
cost. Upstream JAX changed its CPU rule the same way (jax-ml/jax#37872: "no longer advantageous either in
compilation cost or runtime cost" with the thunk runtime).

Measured on a 2-core AMD EPYC (AVX-512), no compilation cache, runs of old and new alternated: the tiny
BarlowTwins step compiles in a median 6.90 instead of 8.04 CPU-s (5 runs each, 940 -> 764 kernels;
``python benchmarks/step_compile.py --methods barlowtwins --devices 1``), both views' augmentation of a
16-image batch alone in 1.3 instead of 2.7-3.4 CPU-s (185 -> 24 kernels; ``jax.jit`` of
``train.augment.augment_batch`` for both views, timed with a throwaway script, not in the repository). At run
time the straight-line hash is not faster here: the same two-view augmentation of 64 images at 64 px took a
median 6.5-8.4 instead of 4.4-4.6 ms (30 calls, two runs each; same script), which is under 1 % of the
ResNet-18 step it sits in (445-534 ms before, 426-546 ms after: run-to-run noise larger than the difference;
``python benchmarks/train_step.py --sizes 64``, five alternated runs each). A short run (the tests, the
demo, a smoke job) gains the compile time; a CPU run of thousands of steps loses a few seconds.

It changes how XLA computes the bits, not the bits (threefry is integer arithmetic;
``tests/test_threefry.py`` checks the CPU lowering against a NumPy threefry2x32 and Random123's known
answer). :func:`use_unrolled_on_cpu` is called by ``models.ops.resolve`` when it picks ``cpu_fast`` on CPU
(the CPU speed-ups); ``model.ops='xla'`` keeps JAX's own rule unless a ``cpu_fast`` model was built earlier in
the same process (the registration is process-wide; the numbers are the same either way).
"""
from __future__ import annotations


def use_unrolled_on_cpu() -> bool:
    """Register JAX's unrolled threefry lowering for the CPU platform (process-wide; registering again
    replaces the rule with itself).

    Returns False, changing nothing, where this JAX does not have the private names used here (a newer
    release that moved them; it may well have made the same change itself).
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf
        rule, prim = tf._threefry2x32_lowering_rule, tf.threefry2x32_p
    except (ImportError, AttributeError):
        return False
    mlir.register_lowering(prim, rule, platform="cpu")
    return True
