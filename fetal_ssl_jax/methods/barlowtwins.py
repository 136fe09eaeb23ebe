"""BarlowTwins: make the cross-correlation of the two views' embeddings the identity."""
from __future__ import annotations

import jax

from fetal_ssl_jax import losses
from fetal_ssl_jax.methods.base import JointEmbedding


class BarlowTwins(JointEmbedding):
    name = "barlowtwins"

    def objective(self, z1: jax.Array, z2: jax.Array):
        t = losses.barlow_twins_terms(z1, z2, lambd=float(self.mcfg.lambd))  # == barlow_twins_loss, split
        scale = float(self.mcfg.get("scale_loss", 1.0))
        return (t["on_diag"] + t["off_diag"]) * scale, t
