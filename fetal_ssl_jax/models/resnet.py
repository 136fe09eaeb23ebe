"""Flax Linen ResNet-18/34/50 with torchvision's block structure and names.

Submodule names follow torchvision's state-dict keys one to one (``layer1.0.conv1`` ->
``layer1_0/conv1``, ``layer2.0.downsample.0`` -> ``layer2_0/downsample_0``), so ImageNet
weights load and our encoders export without a name table (see torchvision_convert.py).
Bottleneck blocks put the stride on the 3x3 conv (torchvision's "ResNet v1.5").
Convolutions go through :class:`~fetal_ssl_jax.models.conv.Conv`, which keeps XLA:CPU
out of its slow path for tiny outputs, and the stem's max pool through
:func:`~fetal_ssl_jax.models.pooling.max_pool_3x3_s2` (XLA:CPU's max-pool gradient is slow).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from fetal_ssl_jax.models.conv import Conv
from fetal_ssl_jax.models.norm import BatchNorm
from fetal_ssl_jax.models.ops import XLA, Ops
from fetal_ssl_jax.models.ops import resolve as resolve_ops
from fetal_ssl_jax.models.pooling import max_pool_3x3_s2

Array = jax.Array

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for every conv.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torchvision nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

ARCHS: dict[str, tuple[tuple[int, ...], str]] = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


def base_channels(width: float) -> int:
    """Stem / first-stage channels for a width multiplier (64 at width 1)."""
    return max(1, int(round(64 * width)))


def stage_channels(width: float, stage: int) -> int:
    return base_channels(width) * 2 ** stage


def _dtype(name: Any) -> Any:
    if isinstance(name, str):
        return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]
    return name


def _fan_in_uniform_bias(fan_in: int):
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    planes: int
    stride: int = 1
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    ops: Ops = XLA

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = functools.partial(Conv, dtype=self.dtype, kernel_init=conv_init, ops=self.ops)
        norm = functools.partial(BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                                 epsilon=1e-5, dtype=self.dtype, closed_form_grad=self.ops.handwritten_grads)
        identity = x
        y = conv(self.planes, 3, self.stride, 1, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.planes, 3, 1, 1, name="conv2")(y)
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        y = norm(name="bn2", scale_init=last_scale)(y)
        if self.stride != 1 or x.shape[-1] != self.planes:
            identity = conv(self.planes, 1, self.stride, 0, name="downsample_0")(x)
            identity = norm(name="downsample_1")(identity)
        return nn.relu(y + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 with 4x expansion (ResNet-50)."""

    planes: int
    stride: int = 1
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    ops: Ops = XLA

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = functools.partial(Conv, dtype=self.dtype, kernel_init=conv_init, ops=self.ops)
        norm = functools.partial(BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                                 epsilon=1e-5, dtype=self.dtype, closed_form_grad=self.ops.handwritten_grads)
        out_ch = self.planes * EXPANSION["bottleneck"]
        identity = x
        y = conv(self.planes, 1, 1, 0, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.planes, 3, self.stride, 1, name="conv2")(y)
        y = nn.relu(norm(name="bn2")(y))
        y = conv(out_ch, 1, 1, 0, name="conv3")(y)
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        y = norm(name="bn3", scale_init=last_scale)(y)
        if self.stride != 1 or x.shape[-1] != out_ch:
            identity = conv(out_ch, 1, self.stride, 0, name="downsample_0")(x)
            identity = norm(name="downsample_1")(identity)
        return nn.relu(y + identity)


class ResNet(nn.Module):
    """ResNet encoder; returns pooled float32 features [B, D], or logits if num_classes.

    Parameters are float32; ``dtype`` is the compute dtype (bfloat16 optional).
    ``small_stem`` replaces the 7x7/2 conv + max-pool by a 3x3/1 conv for 32-64 px inputs.
    """

    stage_sizes: Sequence[int]
    block: str = "basic"
    width: float = 1.0
    small_stem: bool = False
    zero_init_residual: bool = False
    num_classes: int | None = None
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    ops: Ops = XLA  # which kernels run (models.ops); the builders below resolve it from config/platform

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        if self.block not in EXPANSION:
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        block_cls = BasicBlock if self.block == "basic" else Bottleneck
        x = jnp.asarray(x, self.dtype)
        c0 = base_channels(self.width)
        if self.small_stem:
            x = Conv(c0, 3, 1, 1, dtype=self.dtype, kernel_init=conv_init, ops=self.ops, name="conv1")(x)
        else:
            x = Conv(c0, 7, 2, 3, dtype=self.dtype, kernel_init=conv_init, ops=self.ops, name="conv1")(x)
        x = BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype,
                      closed_form_grad=self.ops.handwritten_grads, name="bn1")(x)
        x = nn.relu(x)
        if not self.small_stem:
            x = max_pool_3x3_s2(x, self.ops.maxpool)
        for stage, n_blocks in enumerate(self.stage_sizes):
            for b in range(n_blocks):
                stride = 2 if (stage > 0 and b == 0) else 1
                x = block_cls(planes=stage_channels(self.width, stage), stride=stride,
                              zero_init_residual=self.zero_init_residual, dtype=self.dtype,
                              bn_momentum=self.bn_momentum, ops=self.ops,
                              name=f"layer{stage + 1}_{b}")(x, train)
        x = jnp.mean(x.astype(jnp.promote_types(self.dtype, jnp.float32)), axis=(1, 2))  # f64 stays f64
        if self.num_classes is not None:
            x = nn.Dense(self.num_classes, kernel_init=dense_kernel_init,
                         bias_init=_fan_in_uniform_bias(x.shape[-1]), name="fc")(x)
        return x


def ResNet18(ops: Any = "auto", **kw: Any) -> ResNet:
    return ResNet(stage_sizes=ARCHS["resnet18"][0], block="basic", ops=resolve_ops(ops), **kw)


def ResNet34(ops: Any = "auto", **kw: Any) -> ResNet:
    return ResNet(stage_sizes=ARCHS["resnet34"][0], block="basic", ops=resolve_ops(ops), **kw)


def ResNet50(ops: Any = "auto", **kw: Any) -> ResNet:
    return ResNet(stage_sizes=ARCHS["resnet50"][0], block="bottleneck", ops=resolve_ops(ops), **kw)


def _arch(cfg: ml_collections.ConfigDict) -> tuple[tuple[int, ...], str]:
    arch = cfg.arch.lower()
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[arch]


def build_backbone(cfg: ml_collections.ConfigDict, num_classes: int | None = None, ops: Any = None) -> ResNet:
    """Backbone from a config with arch, width, small_stem, zero_init_residual, dtype, ops.

    The one place the kernel choice is made: ``ops`` (an already resolved :class:`models.ops.Ops`,
    e.g. the method's) or else ``cfg.ops`` ('auto' when absent) resolved for this platform.
    """
    stage_sizes, block = _arch(cfg)
    return ResNet(
        ops=resolve_ops(cfg if ops is None else ops),
        stage_sizes=stage_sizes,
        block=block,
        width=float(cfg.get("width", 1.0)),
        small_stem=bool(cfg.get("small_stem", False)),
        zero_init_residual=bool(cfg.get("zero_init_residual", False)),
        num_classes=num_classes,
        dtype=_dtype(cfg.get("dtype", "float32")),
        bn_momentum=float(cfg.get("bn_momentum", 0.9)),
    )


def feature_dim(cfg: ml_collections.ConfigDict) -> int:
    """Pooled feature size: 512*width (basic) or 2048*width (bottleneck)."""
    _, block = _arch(cfg)
    return stage_channels(float(cfg.get("width", 1.0)), 3) * EXPANSION[block]
