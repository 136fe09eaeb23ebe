"""Linear probe: a linear head on frozen-encoder features, class-weighted CE, epoch chosen on val macro-F1.

The encoder is frozen including BatchNorm (features come from an eval-mode forward, see
features.py) and features are extracted once and cached. The whole head training, all
epochs, is one jitted ``lax.scan``; it returns the head after every epoch and the val
predictions, so the epoch with the best validation macro-F1 is picked on the host and
only that head ever sees the test split.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fetal_ssl_jax.evaluate import features, metrics as metrics_lib, results
from fetal_ssl_jax.methods.supervised import weighted_cross_entropy


def _optimizer(pcfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    lr = optax.cosine_decay_schedule(float(pcfg.lr), max(1, total_steps))
    mask = lambda p: {"w": True, "b": False}  # noqa: E731 - no decay on the bias
    if pcfg.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=float(pcfg.weight_decay), mask=mask)
    if pcfg.optimizer == "sgd":
        return optax.chain(optax.add_decayed_weights(float(pcfg.weight_decay), mask=mask), optax.sgd(lr, 0.9))
    raise ValueError(f"probe.optimizer must be 'adamw' or 'sgd', got {pcfg.optimizer!r}")


@functools.partial(jax.jit, static_argnames=("num_classes", "epochs", "batch", "tx"))
def _fit(x, y, x_val, weights, key, *, num_classes: int, epochs: int, batch: int, tx):
    n, d = x.shape
    nb = -(-n // batch)
    params = {"w": jnp.zeros((d, num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}

    def loss_fn(p, xb, yb):
        return weighted_cross_entropy(xb @ p["w"] + p["b"], yb, weights)

    def step(carry, idx):
        p, o = carry
        loss, g = jax.value_and_grad(loss_fn)(p, x[idx], y[idx])
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), loss

    def epoch(carry, k):
        perm = jax.random.permutation(k, n)
        idx = jnp.concatenate([perm, perm[:nb * batch - n]]).reshape(nb, batch)  # wrap to whole batches
        carry, losses = jax.lax.scan(step, carry, idx)
        p = carry[0]
        return carry, (p, jnp.argmax(x_val @ p["w"] + p["b"], -1), losses.mean())

    _, (history, val_pred, losses) = jax.lax.scan(epoch, (params, tx.init(params)), jax.random.split(key, epochs))
    return history, val_pred, losses


def train_head(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, weights: np.ndarray,
               pcfg: ml_collections.ConfigDict, num_classes: int, seed: int) -> dict[str, Any]:
    """Trains the head; returns the selected epoch's head, the per-epoch val macro-F1 and losses."""
    batch = len(x) if int(pcfg.batch_size) <= 0 else min(int(pcfg.batch_size), len(x))
    epochs = int(pcfg.epochs)
    tx = _optimizer(pcfg, epochs * -(-len(x) // batch))
    history, val_pred, losses = _fit(jnp.asarray(x), jnp.asarray(y), jnp.asarray(x_val), jnp.asarray(weights),
                                     jax.random.key(seed), num_classes=num_classes, epochs=epochs, batch=batch,
                                     tx=tx)
    val_pred = np.asarray(val_pred)
    f1 = np.array([metrics_lib.macro_f1(y_val, p, num_classes) for p in val_pred])
    best = int(np.argmax(f1))  # earliest epoch among ties
    head = jax.tree.map(lambda h: np.asarray(h[best]), history)
    return dict(head=head, epoch=best + 1, val_f1=f1.tolist(), loss=np.asarray(losses).tolist())


def standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(0)
    sd = x.std(0)
    return mu, np.where(sd > 1e-6, sd, 1.0)


def probe(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    ff = features.frozen_features(cfg, workdir)
    (x, y), (xv, yv), (xt, yt) = ff.train, ff.val, ff.test
    k = ff.store.num_classes
    weights = metrics_lib.class_weights(ff.subset.labels, k)
    mu, sd = standardizer(x) if cfg.probe.standardize else (np.zeros(x.shape[1], np.float32), 1.0)
    z = lambda a: ((a - mu) / sd).astype(np.float32)  # noqa: E731
    fit = train_head(z(x), y, z(xv), yv, weights, cfg.probe, k, int(cfg.seed))
    logits = lambda a: z(a) @ fit["head"]["w"] + fit["head"]["b"]  # noqa: E731
    extra = dict(selected_epoch=fit["epoch"], epochs=int(cfg.probe.epochs), class_weights=weights.tolist(),
                 val_history=fit["val_f1"], feature_dim=int(x.shape[1]))
    if jax.process_index() == 0:  # the selected head, for reuse
        np.savez(os.path.join(workdir, "probe_head.npz"), w=fit["head"]["w"], b=fit["head"]["b"], mean=mu,
                 std=np.broadcast_to(sd, mu.shape))
    ident = results.identity(cfg, ff.init, ff.subset, ff.store)
    return results.write(workdir, ident, (yv, np.argmax(logits(xv), -1)), (yt, np.argmax(logits(xt), -1)), extra)
