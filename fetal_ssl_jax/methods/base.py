"""What every SSL method provides to the shared train step, and the joint-embedding base.

A method is a small object: its network (backbone + heads), its extra state (EMA target,
queue; empty for most), its loss on the augmented views, and an optional update of the
extra state after the optimizer step. Nothing about loops, devices or checkpoints.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fetal_ssl_jax import monitors
from fetal_ssl_jax.models import build_backbone, norm
from fetal_ssl_jax.models import ops as ops_lib
from fetal_ssl_jax.models.mlp import MLP

Pytree = Any


class LossOutput(NamedTuple):
    """What a method's ``loss`` returns to the shared step (a pytree: it crosses ``value_and_grad``)."""

    loss: jax.Array                # scalar, float32
    metrics: dict[str, jax.Array]  # scalars to log
    batch_stats: Pytree            # the network's updated BatchNorm statistics
    extra: Pytree                  # the method's updated extra state (EMA target, queue, class weights)
    rank_input: jax.Array | None = None  # embeddings (projector output) for the RankMe monitor (None: no RankMe)
    feature_input: jax.Array | None = None  # backbone features of the same rows, for the features' RankMe



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
    # Augmented inputs the loss needs, in augmentation order: the step augments entry i with the i-th
    # of each (view1, view2) augmentation setting (BYOL-style asymmetric probabilities).
    views: tuple[str, ...] = ("view1", "view2")

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.cfg = cfg
        self.mcfg = cfg.get(self.name, ml_collections.ConfigDict())
        self.ops = ops_lib.resolve(cfg.model)  # the kernel choice, once (models.ops); passed to every module
        self.model = self.network()

    # --- to implement -------------------------------------------------------------
    def network(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, params: Pytree, batch_stats: Pytree, extra: Pytree, inputs: Mapping[str, jax.Array],
             rng: jax.Array, step: jax.Array) -> LossOutput:
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
        return build_backbone(self.cfg.model, ops=self.ops)

    def mlp(self, dims, **kw: Any) -> MLP:
        """An MLP head (hidden widths, then the output width) with this method's kernel choice."""
        dims = tuple(dims)
        return MLP(hidden=dims[:-1], out=dims[-1], ops=self.ops, **kw)


class JointEmbedding(Method):
    """Two augmented views through the same encoder + projector; ``objective(z1, z2)`` compares them.

    Both views go through the network as one interleaved batch of 2B (one kernel launch per
    layer, twice the rows per convolution), with BatchNorm statistics per view
    (``models.norm.per_view_statistics``): the same outputs and running statistics as two
    separate forwards, as in the reference implementations (which it falls back to where
    that is faster, ``models.ops.Ops.views_as_one_batch``). Under jit they are global-batch.
    """

    def projector(self) -> nn.Module:
        return self.mlp(self.mcfg.proj_dims, use_bn=True, last_bn=self.last_bn, last_bn_scale=self.last_bn_scale)

    last_bn: bool = False        # the projector ends with BN (no ReLU)
    last_bn_scale: bool = False  # ... which keeps a learnt scale (gamma), never a shift
    bn_over_both_views: bool = False  # BatchNorm statistics over the 2B rows of both views (SimCLR's reference)

    def network(self) -> nn.Module:
        return EncoderWithHead(self.backbone(), self.projector())

    def objective(self, z1: jax.Array, z2: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        raise NotImplementedError

    def loss(self, params, batch_stats, extra, inputs, rng, step) -> LossOutput:
        # Both views as one interleaved batch where models.ops says it is faster (accelerators, oneDNN
        # on CPU: BarlowTwins R18 at 64 px, 2 cores, 77 -> 86 img/s); XLA:CPU's own convolutions run a
        # batch of 2B slower than two of B (65 -> 59 img/s). Same numbers either way (models.norm).
        if self.bn_over_both_views:  # one batch of 2B, one set of statistics, whatever the kernels
            # Concatenated, not interleaved: the interleaved batch with one set of statistics gave gradients
            # 1.5 % off on 4 devices vs 1 (XLA:CPU SPMD, jax 0.10.2; 2 devices and per-view statistics agree),
            # the concatenation agrees to 1e-5 (tests/test_engine_step.py).
            b = inputs["view1"].shape[0]
            out, batch_stats = self.apply(params, batch_stats, jnp.concatenate([inputs["view1"], inputs["view2"]]))
            o1, o2 = ({k: v[i * b:(i + 1) * b] for k, v in out.items()} for i in range(2))
        elif self.ops.views_as_one_batch:
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
        return LossOutput(loss, metrics, batch_stats, extra, rank_input=z1, feature_input=o1["h"])
