"""Supervised classification (full fine-tuning): backbone + linear 'fc' head, class-weighted CE.

Runs in the shared train step like any SSL method. Class weights come from the label
subset actually trained on (PROTOCOL.md) and are passed in through
``config.supervised.class_weights`` and live in the train state's ``extra`` (an array, not
a compile-time constant, so runs that differ only in their subset share compiled code); the
loss is PyTorch's weighted mean (sum w_y * CE / sum w_y over the actual global batch).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fetal_ssl_jax.methods.base import LossOutput, Method
from fetal_ssl_jax.models import build_backbone


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None,
                           label_smoothing: float = 0.0) -> jax.Array:
    logits = logits.astype(jnp.float32)
    k = logits.shape[-1]
    targets = jax.nn.one_hot(labels, k)
    if label_smoothing > 0:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / k
    ce = optax.softmax_cross_entropy(logits, targets)
    w = jnp.ones_like(ce) if weights is None else jnp.asarray(weights, jnp.float32)[labels]
    return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-12)


class Supervised(Method):
    name = "supervised"
    views = ("image",)

    def network(self) -> nn.Module:
        k = int(self.mcfg.get("num_classes", 0))
        if k <= 0:
            raise ValueError("supervised.num_classes must be set (the labelled store's class count)")
        return build_backbone(self.cfg.model, num_classes=k, ops=self.ops)

    def init_extra(self, params, batch_stats, sample) -> dict:
        k = int(self.mcfg.num_classes)
        w = tuple(self.mcfg.get("class_weights", ()) or ())
        if w and len(w) != k:
            raise ValueError(f"supervised.class_weights has {len(w)} entries for {k} classes")
        return {"class_weights": jnp.asarray(w if w else (1.0,) * k, jnp.float32)}

    def loss(self, params, batch_stats, extra, inputs, rng, step) -> LossOutput:
        logits, batch_stats = self.apply(params, batch_stats, inputs["image"])
        labels = inputs["label"].astype(jnp.int32)
        loss = weighted_cross_entropy(logits, labels, extra["class_weights"],
                                      float(self.mcfg.get("label_smoothing", 0.0)))
        acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        return LossOutput(loss, {"train_accuracy": acc}, batch_stats, extra)

    def encoder_variables(self, params, batch_stats) -> dict:
        """The backbone without its classifier, in models.ResNet's layout (what SSL encoders save)."""
        return {"params": {k: v for k, v in params.items() if k != "fc"}, "batch_stats": batch_stats}
