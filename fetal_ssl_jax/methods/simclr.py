"""SimCLR-v2: NT-Xent with every other sample of the global batch as a negative."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fetal_ssl_jax import losses
from fetal_ssl_jax.methods.base import JointEmbedding


class SimCLR(JointEmbedding):
    name = "simclr"
    last_bn = True  # SimCLR-v2's projector ends with BN (no ReLU)

    def objective(self, z1: jax.Array, z2: jax.Array):
        t = float(self.mcfg.temperature)
        loss = losses.nt_xent_loss(z1, z2, temperature=t)
        a = z1 / jnp.linalg.norm(z1, axis=1, keepdims=True)
        b = z2 / jnp.linalg.norm(z2, axis=1, keepdims=True)
        return loss, {"positive_cos": jnp.mean(jnp.sum(a * b, axis=1))}
