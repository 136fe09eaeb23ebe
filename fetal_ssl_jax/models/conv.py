"""A bias-free 2-D convolution whose kernel is chosen by ``models.ops``: XLA, oneDNN or im2col.

Which path runs is data (the module's ``ops`` field, resolved once by the backbone builder):
with ``ops.onednn`` float32 convolutions run in oneDNN through the XLA FFI
(``fetal_ssl_jax.kernels.onednn``; XLA:CPU's own convolutions made the ResNet train step ~1.4x
slower than PyTorch's); outputs of at most ``ops.im2col_max_pixels`` pixels take the im2col path
below (faster than oneDNN there too); everything else calls ``lax.conv_general_dilated``.

XLA:CPU runs 3x3 convolutions whose output is only a few pixels wide (the last ResNet
stage at 64 px) extremely slowly: 189 ms for 512->512 channels on a 2x2 output versus
7 ms on 4x4. im2col computes the same convolution as static slices of the padded input,
concatenated on the channel axis, followed by one matmul, which XLA:CPU runs at full speed.

The parameter is named ``kernel`` with shape [kh, kw, cin, cout] and the same default
initialiser as ``flax.linen.Conv``, so parameters are interchangeable with ``nn.Conv``
(``use_bias=False``) and map 1:1 onto torchvision weights.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from fetal_ssl_jax.kernels import onednn
from fetal_ssl_jax.models.ops import XLA, Ops

Array = jax.Array


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def im2col_conv(x: Array, kernel: Array, strides: tuple[int, int],
                padding: tuple[tuple[int, int], tuple[int, int]],
                precision: Any = None) -> Array:
    """Convolution as one matmul over patches; same result as lax conv (NHWC, HWIO).

    The patch channel order is (kh, kw, cin), which is exactly the row-major reshape of
    an HWIO kernel to [kh*kw*cin, cout].
    """
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    (pt, pb), (pl, pr) = padding
    if pt or pb or pl or pr:
        x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    b, hp, wp, _ = x.shape
    ho = (hp - kh) // sh + 1
    wo = (wp - kw) // sw + 1
    if kh == 1 and kw == 1:
        patches = x[:, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw, :]
    else:
        cols = [
            x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ]
        patches = jnp.concatenate(cols, axis=-1)
    out = jnp.dot(patches.reshape(b * ho * wo, kh * kw * cin),
                  kernel.reshape(kh * kw * cin, cout), precision=precision)
    return out.reshape(b, ho, wo, cout)


class Conv(nn.Module):
    """Bias-free NHWC conv with explicit symmetric padding; the kernel path comes from ``ops``.

    ``im2col``: 'auto' follows ``ops.im2col_max_pixels``; 'always'/'never' force a path (tests,
    benchmarks). oneDNN runs when ``ops.onednn``, the compute dtype is float32 and im2col is not taken.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: int | Sequence[int] = 0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    precision: Any = None
    im2col: str = "auto"
    ops: Ops = XLA

    def use_onednn(self, dtype: Any) -> bool:
        return self.ops.onednn and self.im2col != "always" and jnp.dtype(dtype) == jnp.float32

    def use_im2col(self, in_h: int, in_w: int) -> bool:
        if self.im2col == "always":
            return True
        if self.im2col == "never":
            return False
        if self.im2col != "auto":
            raise ValueError(f"im2col must be 'auto', 'always' or 'never', got {self.im2col!r}")
        kh, kw = _pair(self.kernel_size)
        sh, sw = _pair(self.strides)
        ph, pw = _pair(self.padding)
        ho = conv_output_size(in_h, kh, sh, ph)
        wo = conv_output_size(in_w, kw, sw, pw)
        return ho * wo <= self.ops.im2col_max_pixels

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = _pair(self.kernel_size)
        strides = _pair(self.strides)
        ph, pw = _pair(self.padding)
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, cin, self.features),
                            self.param_dtype)
        dtype = self.dtype if self.dtype is not None else jnp.result_type(x, kernel)
        x = jnp.asarray(x, dtype)
        kernel = jnp.asarray(kernel, dtype)
        padding = ((ph, ph), (pw, pw))
        # im2col first: for outputs of a few pixels it also beats oneDNN (ResNet-18's last stage at
        # 64 px, batch 128, 2 cores: oneDNN fwd+dX+dW 61 ms per conv vs ~40 ms; the step +5%).
        if self.use_im2col(x.shape[1], x.shape[2]):
            return im2col_conv(x, kernel, strides, padding, self.precision)
        if self.use_onednn(dtype):
            return onednn.conv2d(x, kernel, strides, padding, self.ops.onednn_threads, self.ops.onednn_dw_rows)
        return lax.conv_general_dilated(
            x, kernel, window_strides=strides, padding=padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
