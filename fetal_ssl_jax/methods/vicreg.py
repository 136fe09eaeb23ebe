"""VICReg: invariance + variance (hinge on per-dim std) + covariance decorrelation."""
from __future__ import annotations

import jax

from fetal_ssl_jax import losses
from fetal_ssl_jax.methods.base import JointEmbedding


class VICReg(JointEmbedding):
    name = "vicreg"

    def objective(self, z1: jax.Array, z2: jax.Array):
        m = self.mcfg
        t = losses.vicreg_terms(z1, z2)  # == vicreg_loss, split into its weighted parts
        parts = {"invariance": float(m.sim_coeff) * t["inv"], "variance": float(m.std_coeff) * t["var"],
                 "covariance": float(m.cov_coeff) * t["cov"]}
        return parts["invariance"] + parts["variance"] + parts["covariance"], parts
