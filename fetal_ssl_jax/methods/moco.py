"""MoCo-v2 (Chen et al. 2020): InfoNCE of a query against a momentum key and a queue of old keys.

State in ``extra``: the key encoder (``key_params``, its own ``key_batch_stats``; a real
copy of the query encoder at init, then an EMA of it with m = ``momentum`` or a cosine
schedule to 1), the ``queue`` [K, D] of l2-normalised keys and ``queue_ptr``. Keys of the
*global* batch are written in batch order at ``queue_ptr`` (wrapping), overwriting the
oldest; everything is in the train state, so orbax checkpoints and restores it.

BatchNorm countermeasure: shuffled "ghost" BN (MoCo's own Shuffle-BN, made
device-count independent). Why: all negatives come from the queue, i.e. from *earlier*
batches, and only the positive key comes from the current batch. If the query and its
key are normalised with statistics of the same images, the batch statistics form a
signature that tells "current batch" from "queue" and the loss can be lowered without
learning instance features (MoCo, Sec. 3.3). Under jit, BN is over the global batch, so
query and key statistics both come from the current set of images; shuffling the key
batch alone changes nothing (mean and variance are permutation invariant), and a
symmetric loss does not remove the current-vs-queue signature either. So both encoders
normalise over fixed groups of ``shuffle_bn_group`` samples (vmap over groups, like
per-GPU BN but independent of the device count, so 1 and N devices agree), and the key
batch is permuted (from the loss rng) before the key encoder and un-permuted after, so
a query's group and its key's group hold different images. ``shuffle_bn_group = 0``
falls back to global BN (no countermeasure). ``symmetric = True`` adds solo-learn's
symmetrised loss (both views as query; both keys enqueued) on top.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fetal_ssl_jax import losses, monitors
from fetal_ssl_jax.methods.base import EncoderWithHead, JointEmbedding, LossOutput, Pytree
from fetal_ssl_jax.methods.byol import cosine_ema_rate, ema, real_copy


def enqueue(queue: jax.Array, ptr: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Writes keys [n, D] in order at rows ptr, ptr+1, ... (mod K): the oldest rows are replaced."""
    k = queue.shape[0]
    rows = (ptr + jnp.arange(keys.shape[0], dtype=ptr.dtype)) % k
    return queue.at[rows].set(keys.astype(queue.dtype)), (ptr + keys.shape[0]) % k


class MoCo(JointEmbedding):
    name = "moco"

    def projector(self) -> nn.Module:
        dims = tuple(self.mcfg.proj_dims)
        return self.mlp(dims, use_bn=False)  # MoCo-v2: no BN in the head

    def momentum(self, step: jax.Array) -> jax.Array:
        base = float(self.mcfg.momentum)
        if self.mcfg.get("momentum_schedule", "constant") == "cosine":
            return cosine_ema_rate(step, int(self.cfg.train.steps), base)
        return jnp.float32(base)

    def init_extra(self, params: Pytree, batch_stats: Pytree, sample: jax.Array) -> Pytree:
        k, d = int(self.mcfg.queue_size), int(self.mcfg.proj_dims[-1])
        queue = losses.l2_normalize(jax.random.normal(jax.random.key(int(self.cfg.seed) + 4242), (k, d)))
        return {"key_params": real_copy(params), "key_batch_stats": real_copy(batch_stats),
                "queue": queue, "queue_ptr": jnp.zeros((), jnp.int32)}

    # --- ghost BN --------------------------------------------------------------------
    def groups(self, batch: int) -> int:
        g = int(self.mcfg.get("shuffle_bn_group", 0))
        if g <= 0 or g >= batch:
            return 1
        if batch % g:
            raise ValueError(f"moco.shuffle_bn_group={g} must divide the global batch {batch}")
        return batch // g

    def grouped_apply(self, variables: Pytree, x: jax.Array, groups: int) -> tuple[dict[str, jax.Array], Pytree]:
        """Forward with BN statistics per group of consecutive samples; running stats averaged over groups."""
        model = self.model

        def fwd(xg):
            out, upd = model.apply(variables, xg, train=True, mutable=["batch_stats"])
            return out, upd["batch_stats"]

        if groups == 1:
            return fwd(x)
        xg = x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
        out, stats = jax.vmap(fwd)(xg)
        out = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), out)
        return out, jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)

    def keys(self, extra: Pytree, x: jax.Array, perm: jax.Array | None, groups: int
             ) -> tuple[jax.Array, Pytree]:
        """Key encoder on the shuffled batch, un-shuffled, l2-normalised, no gradient."""
        variables = {"params": jax.lax.stop_gradient(extra["key_params"]), "batch_stats": extra["key_batch_stats"]}
        xs = x if perm is None else x[perm]
        out, stats = self.grouped_apply(variables, xs, groups)
        k = out["z"].astype(jnp.float32)
        if perm is not None:
            k = k[jnp.argsort(perm)]
        return jax.lax.stop_gradient(losses.l2_normalize(k)), stats

    def loss(self, params, batch_stats, extra, inputs, rng, step) -> LossOutput:
        x1, x2 = inputs["view1"], inputs["view2"]
        groups = self.groups(x1.shape[0])
        t = float(self.mcfg.temperature)
        symmetric = bool(self.mcfg.get("symmetric", False))
        perm = jax.random.permutation(rng, x1.shape[0]) if groups > 1 else None

        o1, bs = self.grouped_apply({"params": params, "batch_stats": batch_stats}, x1, groups)
        k2, kbs = self.keys(extra, x2, perm, groups)
        queue = extra["queue"]
        loss = losses.moco_loss(o1["z"], k2, queue, t)
        metrics: dict[str, Any] = {}
        new_keys = k2
        if symmetric:
            o2, bs = self.grouped_apply({"params": params, "batch_stats": bs}, x2, groups)
            k1, kbs = self.keys(dict(extra, key_batch_stats=kbs), x1, perm, groups)
            l21 = losses.moco_loss(o2["z"], k1, queue, t)
            metrics.update(loss_12=loss, loss_21=l21)
            loss = 0.5 * (loss + l21)
            new_keys = jnp.concatenate([k2, k1], axis=0)  # fixed order: view-2 keys, then view-1 keys

        q1 = losses.l2_normalize(o1["z"].astype(jnp.float32))
        new_queue, new_ptr = enqueue(queue, extra["queue_ptr"], new_keys)
        z1 = o1["z"].astype(jnp.float32)
        metrics.update(
            momentum=self.momentum(step),
            positive_cos=jnp.mean(jnp.sum(jax.lax.stop_gradient(q1) * k2, axis=1)),
            embedding_std=monitors.embedding_std(z1),
            feature_std=monitors.embedding_std(o1["h"].astype(jnp.float32)))
        extra = dict(extra, key_batch_stats=kbs, queue=new_queue, queue_ptr=new_ptr)
        return LossOutput(loss, metrics, bs, extra, rank_input=z1, feature_input=o1["h"])

    def after_update(self, params: Pytree, batch_stats: Pytree, extra: Pytree, step: jax.Array) -> Pytree:
        """key <- m * key + (1 - m) * query with the just-updated query parameters (MoCo's order)."""
        return dict(extra, key_params=ema(extra["key_params"], params, self.momentum(step)))

    def network(self) -> nn.Module:
        return EncoderWithHead(self.backbone(), self.projector())
