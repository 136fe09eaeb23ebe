"""A bias-free 2-D convolution with fast CPU paths: oneDNN kernels, or im2col for tiny outputs.

On CPU (float32) the convolution runs in oneDNN through the XLA FFI
(``fetal_ssl_jax.kernels.onednn``) when that kernel could be built: XLA:CPU's own
convolutions made the ResNet train step ~1.4x slower than PyTorch's. Outputs of at most
``IM2COL_MAX_OUTPUT_PIXELS`` pixels take the im2col path below even then (faster than
oneDNN there too); where oneDNN cannot be built, the XLA paths below apply.

XLA:CPU runs 3x3 convolutions whose output is only a few pixels wide (the last ResNet
stage at 64 px) extremely slowly: 189 ms for 512->512 channels on a 2x2 output versus
7 ms on 4x4. On CPU, when the output is small, this module computes the same
convolution as im2col (static slices of the padded input, concatenated on the channel
axis) followed by one matmul, which XLA:CPU runs at full speed in forward and backward.
Elsewhere (GPU/TPU, large outputs) it calls ``lax.conv_general_dilated``.

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

Array = jax.Array

# Output H*W at or below which the CPU path switches to im2col + matmul. Measured on a
# 2-core CPU, batch 64, forward+backward of one 3x3 conv (lax vs im2col, ms):
#   1x1 out 512->512: 46 vs 6;  2x2 out 512->512: 1097 vs 20;  3x3 out: 52 vs 43;
#   4x4 out 512->512: 81 vs 87;  7x7 out 256->256: 65 vs 79;  16x16 out 128->128: 85 vs 144.
# So im2col only for outputs of at most 3x3 pixels. Read at trace time: set it to 0 to
# disable the path (benchmarks), or raise it for experiments.
IM2COL_MAX_OUTPUT_PIXELS = 9


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
    """Bias-free NHWC conv with explicit symmetric padding and a CPU im2col path.

    ``onednn``: None (auto) uses the oneDNN kernel on the CPU backend for float32 when it
    is available (outputs small enough for im2col excepted); False forces XLA's
    convolution, True requires oneDNN.
    ``im2col`` (checked first, also when oneDNN is available): 'auto' uses im2col on the CPU backend when the output has at most
    ``im2col_max_pixels`` pixels (default: ``IM2COL_MAX_OUTPUT_PIXELS``); 'always'/'never' force a path (tests, benchmarks).
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
    im2col_max_pixels: int | None = None  # None: the module-level IM2COL_MAX_OUTPUT_PIXELS
    onednn: bool | None = None

    def use_onednn(self, dtype: Any) -> bool:
        if self.onednn is False or self.im2col == "always":
            return False
        if self.onednn is True:
            if not onednn.available():
                raise RuntimeError("Conv(onednn=True) but the oneDNN kernel is unavailable (see the log)")
            return True
        return jax.default_backend() == "cpu" and jnp.dtype(dtype) == jnp.float32 and onednn.available()

    def use_im2col(self, in_h: int, in_w: int) -> bool:
        if self.im2col == "always":
            return True
        if self.im2col == "never":
            return False
        if self.im2col != "auto":
            raise ValueError(f"im2col must be 'auto', 'always' or 'never', got {self.im2col!r}")
        if jax.default_backend() != "cpu":
            return False
        kh, kw = _pair(self.kernel_size)
        sh, sw = _pair(self.strides)
        ph, pw = _pair(self.padding)
        ho = conv_output_size(in_h, kh, sh, ph)
        wo = conv_output_size(in_w, kw, sw, pw)
        limit = self.im2col_max_pixels
        if limit is None:
            limit = IM2COL_MAX_OUTPUT_PIXELS
        return ho * wo <= limit

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
            return onednn.conv2d(x, kernel, strides, padding)
        return lax.conv_general_dilated(
            x, kernel, window_strides=strides, padding=padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
