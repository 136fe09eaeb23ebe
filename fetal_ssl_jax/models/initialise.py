"""Compiling the initialisers: programs that run once per run, so their compile time is all they cost.

A model's random initialisation is one jitted program of random draws (threefry, a truncated normal's inverse
erf) for every parameter. XLA:CPU spends most of its compile time on backend optimisation passes that only make
a program run faster, which an initialiser (a few milliseconds, once) does not need: at
``xla_backend_optimization_level=0`` a tiny ResNet-18 train state compiles and runs in 1.5-1.8 s instead of
5.6-5.9 s (BarlowTwins, BYOL, SimCLR states; ``python benchmarks/init_compile.py`` on a 2-core AMD EPYC; op by
op, the bare backbone alone took 8.0 s). The values stay a function of the seed alone; they may differ from the
optimised program's in the last bits (fused multiply-adds), never from run to run. GPUs and TPUs compile it as
any other program.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def compiler_options() -> dict[str, Any] | None:
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


def run_init(fn: Callable, *args: Any, out_shardings: Any = None) -> Any:
    """``jax.jit(fn, out_shardings=...)(*args)``, compiled as an initialiser (see the module docstring)."""
    jitted = jax.jit(fn) if out_shardings is None else jax.jit(fn, out_shardings=out_shardings)
    return jitted.lower(*args).compile(compiler_options=compiler_options())(*args)


def init_module(module: Any, rng: jax.Array, *sample: Any, **kwargs: Any) -> Any:
    """``module.init(rng, *sample, **kwargs)`` (a Flax module's variables) compiled as an initialiser."""
    return run_init(lambda k: module.init(k, *sample, **kwargs), rng)
