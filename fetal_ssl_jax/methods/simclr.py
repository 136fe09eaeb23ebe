"""SimCLR-v2: NT-Xent with every other sample of the global batch as a negative."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fetal_ssl_jax import losses
from fetal_ssl_jax.methods.base import JointEmbedding


class SimCLR(JointEmbedding):
    name = "simclr"
    # As the reference (google-research/simclr v2): the projector ends with BN (no ReLU) that keeps gamma,
    # not beta, and BatchNorm runs over both views together (2N rows), not per view.
    last_bn = True
    last_bn_scale = True
    bn_over_both_views = True

    def objective(self, z1: jax.Array, z2: jax.Array):
        t = float(self.mcfg.temperature)
        loss = losses.nt_xent_loss(z1, z2, temperature=t)
        a = z1 / jnp.linalg.norm(z1, axis=1, keepdims=True)
        b = z2 / jnp.linalg.norm(z2, axis=1, keepdims=True)
        return loss, {"positive_cos": jnp.mean(jnp.sum(a * b, axis=1))}
