"""Tolerances from the arithmetic: compare two float32 computations through a float64 reference.

Two float32 computations of the same function that differ only in rounding (another reduction
order, another convolution kernel, interleaved vs separate batches, another ISA) cannot be held
to a fixed tolerance: how far apart they land depends on the conditioning of the function
(BatchNorm over few values, cancelling sums in a gradient), which varies element by element
and from one CPU to another. What is stable is how *accurate* each one is. So the same function
is evaluated once in float64 (the reference, ~1e-16 relative, i.e. exact at float32 scale), and
the computation under test must be about as accurate as the established one:

    ||ours - ref||  <=  FACTOR * ||theirs - ref||  +  FLOOR * ||ref||      (per leaf, L2)

A wiring bug (a mixed-up view, a wrong stride or padding, a dropped gradient term) gives errors
of the size of the values themselves, far above either side.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

# Errors of two float32 evaluations of one function are draws from the same distribution; the
# ratio of their L2 norms over a leaf of >= 8 elements stays well under 8 unless one of them is
# systematically less accurate.
FACTOR = 8.0
# Relative floor (~8 float32 ulps) for leaves the established path happens to get almost exactly
# right (e.g. a gradient that is exactly representable), where the ratio above means nothing.
FLOOR = 8 * float(np.finfo(np.float32).eps)


def to_float64(tree: Any) -> Any:
    """Float leaves as float64 NumPy arrays (call inside ``jax.enable_x64(True)`` to feed JAX)."""
    return jax.tree.map(lambda a: np.asarray(a, np.float64) if np.issubdtype(np.asarray(a).dtype, np.floating)
                        else np.asarray(a), tree)


def leaf_errors(tree: Any, ref: Any) -> list[tuple[str, float, float]]:
    """(path, ||tree - ref||, ||ref||) per leaf, in float64."""
    out = []
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(ref), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape, (jax.tree_util.keystr(path), a.shape, b.shape)
        out.append((jax.tree_util.keystr(path), float(np.linalg.norm(a - b)), float(np.linalg.norm(b))))
    return out


def assert_as_accurate(ours: Any, theirs: Any, ref: Any, what: str = "", factor: float = FACTOR,
                       floor: float = FLOOR) -> float:
    """Every leaf of ``ours`` is about as close to ``ref`` as ``theirs`` is; returns the worst ratio seen."""
    worst, bad = 0.0, []
    for (path, e_ours, norm), (_, e_theirs, _) in zip(leaf_errors(ours, ref), leaf_errors(theirs, ref), strict=True):
        allowed = factor * e_theirs + floor * norm
        worst = max(worst, e_ours / allowed if allowed > 0 else (0.0 if e_ours == 0 else np.inf))
        if e_ours > allowed:
            bad.append(f"{path}: |ours-ref| {e_ours:.3g} > {factor:g}*|theirs-ref| {e_theirs:.3g} "
                       f"+ {floor:.2g}*|ref| {norm:.3g}")
    assert not bad, f"{what} less accurate than the reference path:\n" + "\n".join(bad)
    return worst
