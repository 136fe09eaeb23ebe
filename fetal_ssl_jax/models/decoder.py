"""Convolutional decoder for the AutoEncoder and Inpainting methods (issue 3).

It maps the encoder's pooled vector [B, D] back to an image [B, H, W, C]: a Dense layer
to a small seed map, then repeated (nearest x2 upsample -> 3x3 conv -> BN -> ReLU)
stages halving the channels, and a final 3x3 conv to the image channels with no
activation (the target is the normalised image, which may be negative). Starting from
the pooled vector keeps the method independent of the backbone's internals and forces
the whole image through the bottleneck, which is the point of these pretext tasks.
Nearest upsampling + conv avoids the checkerboard artefacts of transposed convs, and the
smallest stage is 4x4 so the decoder never enters XLA:CPU's slow conv path.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fetal_ssl_jax.models.conv import Conv
from fetal_ssl_jax.models.norm import BatchNorm
from fetal_ssl_jax.models.ops import XLA, Ops
from fetal_ssl_jax.models.resnet import conv_init

Array = jax.Array


def upsample2x(x: Array) -> Array:
    """Nearest-neighbour x2 upsampling of an NHWC map."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Decoder(nn.Module):
    """``Decoder(out_size, out_channels, width)(features [B, D], train) -> [B, H, W, C]``.

    ``out_size`` must be ``seed_size * 2**k``; ``width`` is the channel count of the
    last upsampling stage (doubled per stage towards the seed, capped at ``max_width``).
    """

    out_size: int
    out_channels: int
    width: int = 32
    seed_size: int = 4
    max_width: int = 512
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    ops: Ops = XLA

    def num_stages(self) -> int:
        ratio = self.out_size / self.seed_size
        k = int(round(math.log2(ratio))) if ratio >= 1 else -1
        if k < 0 or self.seed_size * 2 ** k != self.out_size:
            raise ValueError(f"out_size {self.out_size} must be seed_size {self.seed_size} times a power of 2")
        return k

    def stage_width(self, i: int, n: int) -> int:
        """Channels of upsampling stage i of n (last stage: ``width``)."""
        return min(self.max_width, self.width * 2 ** (n - 1 - i))

    @nn.compact
    def __call__(self, features: Array, train: bool) -> Array:
        n = self.num_stages()
        norm = functools.partial(BatchNorm, use_running_average=not train,
                                 momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype,
                                 closed_form_grad=self.ops.handwritten_grads)
        c_seed = self.stage_width(0, n) if n > 0 else self.width
        x = jnp.asarray(features, self.dtype)
        x = nn.Dense(self.seed_size * self.seed_size * c_seed, dtype=self.dtype, name="seed")(x)
        x = x.reshape(x.shape[0], self.seed_size, self.seed_size, c_seed)
        x = nn.relu(norm(name="seed_bn")(x))
        for i in range(n):
            x = upsample2x(x)
            x = Conv(self.stage_width(i, n), 3, 1, 1, dtype=self.dtype, kernel_init=conv_init, ops=self.ops,
                     name=f"up{i}_conv")(x)
            x = nn.relu(norm(name=f"up{i}_bn")(x))
        x = Conv(self.out_channels, 3, 1, 1, dtype=self.dtype, ops=self.ops, name="out_conv")(x)
        bias = self.param("out_bias", nn.initializers.zeros, (self.out_channels,), jnp.float32)
        return x.astype(jnp.float32) + bias
