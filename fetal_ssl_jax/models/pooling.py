"""The ResNet stem's 3x3 / stride-2 / pad-1 max pool, fast on CPU.

XLA:CPU's reduce_window + select_and_scatter (the gradient of ``nn.max_pool``) is slow:
on a 2-core CPU, batch 64, 64 channels, 56x56 -> 28x28 (ResNet-18 at 112 px), forward +
backward took 427 ms with ``nn.max_pool`` and 135 ms with the even/odd reshape below
(122 vs 38 ms at 32x32). The reshape form takes the max of three rows, then of three
columns, using only pads, reshapes, contiguous slices and ``maximum``.

The forward values are identical. Gradients differ only at exact ties inside a window:
``max_pool`` sends the whole gradient to one element, ``maximum`` splits it. After a
ReLU, ties are zeros, whose gradient the ReLU discards anyway, so parameter gradients
agree.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array

# 'auto': reshape form on the CPU backend, reduce_window elsewhere. 'reshape' or
# 'reduce_window' force one (benchmarks, tests). Read at trace time.
MAXPOOL_IMPL = "auto"


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


def max_pool_3x3_s2_reshape(x: Array) -> Array:
    """Same values as ``nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))`` for NHWC x."""
    _, h, w, _ = x.shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    neg = jnp.array(-jnp.inf, x.dtype)
    x = jnp.pad(x, ((0, 0), (1, 2 * ho + 1 - h), (1, 2 * wo + 1 - w), (0, 0)), constant_values=neg)
    return _max3_stride2(_max3_stride2(x, 1, ho), 2, wo)


def max_pool_3x3_s2(x: Array, impl: str | None = None) -> Array:
    impl = impl or MAXPOOL_IMPL
    if impl == "auto":
        impl = "reshape" if jax.default_backend() == "cpu" else "reduce_window"
    if impl == "reshape":
        return max_pool_3x3_s2_reshape(x)
    if impl == "reduce_window":
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    raise ValueError(f"unknown max-pool implementation {impl!r}")
