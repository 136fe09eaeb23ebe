"""What every SSL method provides to the shared train step, and the joint-embedding base.

A method is a small object: its network (backbone + heads), its extra state (EMA target,
queue; empty for most), its loss on the augmented views, and an optional update of the
extra state after the optimizer step. Nothing about loops, devices or checkpoints.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fetal_ssl_jax import monitors
from fetal_ssl_jax.kernels import onednn
from fetal_ssl_jax.models import build_backbone, norm
from fetal_ssl_jax.models.mlp import MLP

Pytree = Any
LossOut = tuple[jax.Array, dict[str, jax.Array], Pytree, Pytree]  # loss, metrics, batch_stats, extra


class EncoderWithHead(nn.Module):
    """Backbone followed by an MLP head: returns pooled features ``h`` and embedding ``z``."""

    backbone: nn.Module
    head: nn.Module | None

    def __call__(self, x, train: bool = True):
        h = self.backbone(x, train=train)
        z = self.head(h, train=train) if self.head is not None else h
        return {"h": h, "z": z}


class Method:
    """Base class. Subclasses set ``name`` and ``views`` and implement ``network`` and ``loss``."""

    name: str = ""
    views: tuple[str, ...] = ("view1", "view2")  # augmented inputs the loss needs

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.cfg = cfg
        self.mcfg = cfg.get(self.name, ml_collections.ConfigDict())
        self.model = self.network()

    # --- to implement -------------------------------------------------------------
    def network(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, params: Pytree, batch_stats: Pytree, extra: Pytree, inputs: Mapping[str, jax.Array],
             rng: jax.Array, step: jax.Array) -> LossOut:
        raise NotImplementedError

    # --- defaults -----------------------------------------------------------------
    def init(self, rng: jax.Array, sample: jax.Array) -> tuple[Pytree, Pytree, Pytree]:
        """(params, batch_stats, extra) for a sample input [B, H, W, C]."""
        variables = self.model.init(rng, sample, train=True)
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        return params, batch_stats, self.init_extra(params, batch_stats, sample)

    def init_extra(self, params: Pytree, batch_stats: Pytree, sample: jax.Array) -> Pytree:
        return {}

    def after_update(self, params: Pytree, batch_stats: Pytree, extra: Pytree, step: jax.Array) -> Pytree:
        """Runs after the optimizer update (EMA targets); default: nothing."""
        return extra

    def encoder_variables(self, params: Pytree, batch_stats: Pytree) -> dict[str, Pytree]:
        """The backbone's variables, in the layout models.ResNet expects."""
        return {"params": params["backbone"], "batch_stats": batch_stats.get("backbone", {})}

    def apply(self, params: Pytree, batch_stats: Pytree, x: jax.Array, train: bool = True):
        out, upd = self.model.apply({"params": params, "batch_stats": batch_stats}, x, train=train,
                                    mutable=["batch_stats"])
        return out, upd["batch_stats"]

    def backbone(self) -> nn.Module:
        return build_backbone(self.cfg.model)


def views_as_one_batch() -> bool:
    """Run both views as one interleaved batch (same numbers as two forwards, see ``models.norm``)?

    Yes on accelerators and with the oneDNN CPU convolutions (BarlowTwins R18 step at 64 px on
    2 cores: 77 -> 86 img/s); no with XLA:CPU's own convolutions, which run a batch of 128 slower
    than two of 64 (65 -> 59 img/s).
    """
    return jax.default_backend() != "cpu" or onednn.available()


class JointEmbedding(Method):
    """Two augmented views through the same encoder + projector; ``objective(z1, z2)`` compares them.

    Both views go through the network as one interleaved batch of 2B (one kernel launch per
    layer, twice the rows per convolution), with BatchNorm statistics per view
    (``models.norm.per_view_statistics``): the same outputs and running statistics as two
    separate forwards, as in the reference implementations (which it falls back to where
    that is faster, see :func:`views_as_one_batch`). Under jit they are global-batch.
    """

    def projector(self) -> nn.Module:
        dims = tuple(self.mcfg.proj_dims)
        return MLP(hidden=dims[:-1], out=dims[-1], use_bn=True, last_bn=self.last_bn)

    last_bn: bool = False

    def network(self) -> nn.Module:
        return EncoderWithHead(self.backbone(), self.projector())

    def objective(self, z1: jax.Array, z2: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        raise NotImplementedError

    def loss(self, params, batch_stats, extra, inputs, rng, step) -> LossOut:
        if views_as_one_batch():
            with norm.per_view_statistics(2):
                out, batch_stats = self.apply(params, batch_stats, norm.interleave(inputs["view1"], inputs["view2"]))
            split = {k: norm.deinterleave(v, 2) for k, v in out.items()}
            o1, o2 = ({k: v[i] for k, v in split.items()} for i in range(2))
        else:
            o1, batch_stats = self.apply(params, batch_stats, inputs["view1"])
            o2, batch_stats = self.apply(params, batch_stats, inputs["view2"])
        z1, z2 = o1["z"].astype(jnp.float32), o2["z"].astype(jnp.float32)
        loss, terms = self.objective(z1, z2)
        metrics = dict(terms)
        metrics["embedding_std"] = monitors.embedding_std(z1)
        metrics["feature_std"] = monitors.embedding_std(o1["h"].astype(jnp.float32))
        metrics["_rank_input"] = z1  # consumed (and removed) by the step's RankMe monitor
        return loss, metrics, batch_stats, extra
