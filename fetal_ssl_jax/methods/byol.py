"""BYOL (Grill et al. 2020): predict an EMA target network's projection of the other view.

State: the online network (backbone, projector ``head``, ``predictor``) is trained; the
target (backbone + projector, same layout as the online ``{backbone, head}``) lives in
``extra`` as a real copy of the parameters and follows them by EMA after every optimizer
update. The target keeps its own BatchNorm statistics and runs in train mode (batch
statistics), as DeepMind's BYOL does; only parameters are averaged.
tau goes from ``tau_base`` to 1 on a cosine schedule per *step* over ``train.steps``.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fetal_ssl_jax import losses, monitors
from fetal_ssl_jax.methods.base import EncoderWithHead, JointEmbedding, LossOutput, Pytree

ENCODER_KEYS = ("backbone", "head")  # the parts the EMA target mirrors


def cosine_ema_rate(step: jax.Array, total_steps: int, base: float) -> jax.Array:
    """tau(k) = 1 - (1 - base) * (cos(pi k / K) + 1) / 2: base at k = 0, 1 at k = K (clipped after)."""
    k = jnp.minimum(jnp.asarray(step, jnp.float32), float(total_steps))
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * k / max(1, int(total_steps))) + 1.0) / 2.0


def real_copy(tree: Pytree) -> Pytree:
    """Fresh buffers, so the target never aliases the online parameters under donation."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def encoder_part(tree: Pytree) -> Pytree:
    return {k: tree[k] for k in ENCODER_KEYS if k in tree}


def ema(target: Pytree, online: Pytree, tau: jax.Array) -> Pytree:
    return jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o.astype(t.dtype), target, online)


class OnlineWithPredictor(nn.Module):
    """Backbone -> projector (``head``) -> predictor; names match EncoderWithHead for the shared part."""

    backbone: nn.Module
    head: nn.Module
    predictor: nn.Module

    def __call__(self, x, train: bool = True):
        h = self.backbone(x, train=train)
        z = self.head(h, train=train)
        return {"h": h, "z": z, "p": self.predictor(z, train=train)}


class BYOL(JointEmbedding):
    name = "byol"

    def __init__(self, cfg):
        super().__init__(cfg)
        # The target: same modules and names as the online backbone + projector (built here, not as a
        # side effect of network()).
        self.target_model = EncoderWithHead(self.backbone(), self.projector())

    def network(self) -> nn.Module:
        predictor = self.mlp(tuple(self.mcfg.pred_dims), use_bn=True)
        return OnlineWithPredictor(self.backbone(), self.projector(), predictor)

    def tau(self, step: jax.Array) -> jax.Array:
        return cosine_ema_rate(step, int(self.cfg.train.steps), float(self.mcfg.tau_base))

    def init_extra(self, params: Pytree, batch_stats: Pytree, sample: jax.Array) -> Pytree:
        return {"target_params": real_copy(encoder_part(params)),
                "target_batch_stats": real_copy(encoder_part(batch_stats))}

    def target_apply(self, extra: Pytree, x: jax.Array) -> tuple[dict[str, jax.Array], Pytree]:
        """Target forward in train mode (its own batch statistics), no gradient."""
        variables = {"params": jax.lax.stop_gradient(extra["target_params"]),
                     "batch_stats": extra["target_batch_stats"]}
        out, upd = self.target_model.apply(variables, x, train=True, mutable=["batch_stats"])
        return jax.tree.map(jax.lax.stop_gradient, out), upd["batch_stats"]

    def loss(self, params, batch_stats, extra, inputs, rng, step) -> LossOutput:
        o1, batch_stats = self.apply(params, batch_stats, inputs["view1"])
        o2, batch_stats = self.apply(params, batch_stats, inputs["view2"])
        t1, tbs = self.target_apply(extra, inputs["view1"])
        t2, tbs = self.target_apply(dict(extra, target_batch_stats=tbs), inputs["view2"])
        l12 = losses.byol_loss(o1["p"], t2["z"])
        l21 = losses.byol_loss(o2["p"], t1["z"])
        z1 = o1["z"].astype(jnp.float32)
        metrics = {"loss_12": l12, "loss_21": l21, "tau": self.tau(step),
                   "embedding_std": monitors.embedding_std(z1),
                   "feature_std": monitors.embedding_std(o1["h"].astype(jnp.float32))}
        extra = dict(extra, target_batch_stats=tbs)
        return LossOutput(l12 + l21, metrics, batch_stats, extra, rank_input=z1, feature_input=o1["h"])

    def after_update(self, params: Pytree, batch_stats: Pytree, extra: Pytree, step: jax.Array) -> Pytree:
        """target <- tau(step) * target + (1 - tau(step)) * online, with the just-updated online params."""
        new = ema(extra["target_params"], encoder_part(params), self.tau(step))
        return dict(extra, target_params=new)

    def target_encoder_variables(self, extra: Pytree) -> dict[str, Any]:
        """The target's backbone (some works evaluate it instead of the online one)."""
        return {"params": extra["target_params"]["backbone"],
                "batch_stats": extra["target_batch_stats"].get("backbone", {})}
