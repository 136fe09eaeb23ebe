"""The ResNet stem's 3x3 / stride-2 / pad-1 max pool, fast on CPU.

XLA:CPU's reduce_window + select_and_scatter (the gradient of ``nn.max_pool``) is slow:
on a 2-core CPU, batch 64, 64 channels, 56x56 -> 28x28 (ResNet-18 at 112 px), forward +
backward took 427 ms with ``nn.max_pool`` and 135 ms with the even/odd reshape below
(122 vs 38 ms at 32x32). The reshape form takes the max of three rows, then of three
columns, using only pads, reshapes, contiguous slices and ``maximum``.

Its gradient is written by hand (:func:`max_pool_3x3_s2_fast_grad`, two fused passes
instead of autodiff's ~six: 2.8 % faster BarlowTwins step, ResNet-18, 64 px, CPU).

The forward values are identical. Gradients differ only at exact ties inside a window:
``max_pool`` sends the whole gradient to one element, ours splits it evenly among the
tied maxima. After a ReLU, ties are mostly zeros, whose gradient the ReLU discards anyway.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array

def _max3_stride2(x: Array, axis: int, out_len: int) -> Array:
    """max(x[2i], x[2i+1], x[2i+2]) along ``axis`` for i < out_len (x padded, length >= 2*out_len+2)."""
    shape = x.shape
    x = jax.lax.slice_in_dim(x, 0, 2 * out_len + 2, axis=axis)
    x = x.reshape(shape[:axis] + (out_len + 1, 2) + shape[axis + 1:])
    even = jax.lax.index_in_dim(x, 0, axis + 1, keepdims=False)
    odd = jax.lax.index_in_dim(x, 1, axis + 1, keepdims=False)
    first = jax.lax.slice_in_dim(even, 0, out_len, axis=axis)
    second = jax.lax.slice_in_dim(odd, 0, out_len, axis=axis)
    third = jax.lax.slice_in_dim(even, 1, out_len + 1, axis=axis)
    return jnp.maximum(jnp.maximum(first, second), third)


def _pad_input(x: Array, ho: int, wo: int) -> Array:
    """-inf padding: one row/column before, and after up to 2*ho+2 rows / 2*wo+2 columns."""
    _, h, w, _ = x.shape
    neg = jnp.array(-jnp.inf, x.dtype)
    return jnp.pad(x, ((0, 0), (1, 2 * ho + 1 - h), (1, 2 * wo + 1 - w), (0, 0)), constant_values=neg)


def max_pool_3x3_s2_reshape(x: Array) -> Array:
    """Same values as ``nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))`` for NHWC x."""
    _, h, w, _ = x.shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return _max3_stride2(_max3_stride2(_pad_input(x, ho, wo), 1, ho), 2, wo)


@jax.custom_vjp
def max_pool_3x3_s2_fast_grad(x: Array) -> Array:
    """``max_pool_3x3_s2_reshape`` with a hand-written gradient (same values, ties split evenly).

    Autodiff of the reshape form made XLA:CPU run about six passes over stem-sized arrays
    (pads, selects, divisions per tie); the backward below is two fused loops: one counts each
    window's maxima and shares its gradient among them, one gathers for every input pixel
    the shares of the (at most four) windows whose maximum it is.
    """
    return max_pool_3x3_s2_reshape(x)


def _pool_fwd(x: Array):
    y = max_pool_3x3_s2_reshape(x)
    return y, (x, y)


def _pool_bwd(res, g: Array):
    x, y = res
    n, h, w, c = x.shape
    ho, wo = y.shape[1], y.shape[2]
    x6 = _pad_input(x, ho, wo).reshape(n, ho + 1, 2, wo + 1, 2, c)  # padded row 2a+p, col 2b+q
    # A window (i, j) covers padded rows 2i, 2i+1, 2i+2 = (a=i, p=0), (a=i, p=1), (a=i+1, p=0).
    taps = ((0, 0), (0, 1), (1, 0))
    count = sum((x6[:, da:da + ho, p, db:db + wo, q] == y).astype(g.dtype) for da, p in taps for db, q in taps)
    share = g / count  # every window has at least one maximum
    # Padding with NaN (equal to nothing) lets windows i = a and i = a-1 be plain slices.
    nan = jnp.array(jnp.nan, y.dtype)
    yp = jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=nan)
    sp = jnp.pad(share, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # Input parity p = 0 is the first row of window a and the last of window a-1; p = 1 the middle of a.
    src = {0: (1, 0), 1: (1,)}  # offsets into the padded window axis, for each parity
    window = lambda a, oa, ob: a[:, oa:oa + ho + 1, ob:ob + wo + 1]

    def gather(p: int, q: int) -> Array:  # gradient of the inputs at parity (p, q): [n, ho+1, wo+1, c]
        xs = x6[:, :, p, :, q]
        return sum(jnp.where(xs == window(yp, oa, ob), window(sp, oa, ob), 0.0) for oa in src[p] for ob in src[q])

    dx = jnp.stack([jnp.stack([gather(p, q) for q in (0, 1)], axis=3) for p in (0, 1)], axis=2)
    dx = dx.reshape(n, 2 * ho + 2, 2 * wo + 2, c)  # from [n, ho+1, 2(p), wo+1, 2(q), c]
    return (dx[:, 1:1 + h, 1:1 + w],)


max_pool_3x3_s2_fast_grad.defvjp(_pool_fwd, _pool_bwd)


def max_pool_3x3_s2(x: Array, impl: str) -> Array:
    """``impl``: 'reshape' (the form above, hand-written gradient; ``models.ops`` cpu_fast) or
    'reduce_window' (``nn.max_pool``; ops 'xla')."""
    if impl == "reshape":
        return max_pool_3x3_s2_fast_grad(x)
    if impl == "reduce_window":
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    raise ValueError(f"unknown max-pool implementation {impl!r}")
