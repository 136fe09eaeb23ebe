"""Projector / predictor heads shared by the SSL methods.

One class covers the heads of all joint-embedding methods, so a method module only
states its shape: BarlowTwins/VICReg (Dense-BN-ReLU hidden layers, plain last Dense),
SimCLR-v2 (same, plus a last BN), BYOL projector/predictor, MoCo-v2 (no BN at all).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from fetal_ssl_jax.models.norm import BatchNorm
from fetal_ssl_jax.models.ops import XLA, Ops

Array = jax.Array


class MLP(nn.Module):
    """Dense -> [BN] -> ReLU for each hidden width, then Dense(out) -> optional BN.

    Hidden Dense layers drop their bias when followed by BN (it would be cancelled).
    ``last_bn`` adds a BN on the output, without shift, and without scale unless ``last_bn_scale``
    (SimCLR-v2's reference keeps the scale only). The output is float32 whatever ``dtype`` is, so
    the losses see float32 embeddings.
    """

    hidden: Sequence[int]
    out: int
    use_bn: bool = True
    last_bn: bool = False
    last_bn_scale: bool = False
    last_bias: bool = True
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    ops: Ops = XLA

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        norm = functools.partial(BatchNorm, use_running_average=not train,
                                 momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype,
                                 closed_form_grad=self.ops.handwritten_grads)
        x = jnp.asarray(x, self.dtype)
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, use_bias=not self.use_bn, dtype=self.dtype, name=f"dense_{i}")(x)
            if self.use_bn:
                x = norm(name=f"bn_{i}")(x)
            x = nn.relu(x)
        x = nn.Dense(self.out, use_bias=self.last_bias and not self.last_bn, dtype=self.dtype,
                     name="dense_out")(x)
        if self.last_bn:
            x = norm(use_scale=self.last_bn_scale, use_bias=False, name="bn_out")(x)
        return x.astype(jnp.promote_types(self.dtype, jnp.float32))  # float64 stays (test references)
