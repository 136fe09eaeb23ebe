"""kNN on frozen features: k nearest train-subset neighbours by cosine similarity, votes weighted
by exp(similarity / T) (Wu et al. 2018, as in DINO / solo-learn). No training, so no selection:
val and test are both reported with the configured k and T.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fetal_ssl_jax.evaluate import features, results


def _l2n(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _vote(bank, bank_labels, queries, *, k: int, temperature: float, num_classes: int):
    sims = jnp.matmul(_l2n(queries), _l2n(bank).T, precision="highest")
    top, idx = jax.lax.top_k(sims, k)
    w = jnp.exp(top / temperature)
    votes = jnp.einsum("qk,qkc->qc", w, jax.nn.one_hot(bank_labels[idx], num_classes))
    return votes


def knn_predict(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, num_classes: int, k: int = 20,
                temperature: float = 0.07, chunk: int = 1024) -> np.ndarray:
    """Predicted class per query (k is capped at the bank size)."""
    k = min(int(k), len(bank))
    bank_j, labels_j = jnp.asarray(bank, jnp.float32), jnp.asarray(bank_labels, jnp.int32)
    out = [np.asarray(_vote(bank_j, labels_j, jnp.asarray(queries[s:s + chunk], jnp.float32), k=k,
                            temperature=float(temperature), num_classes=num_classes))
           for s in range(0, len(queries), chunk)]
    votes = np.concatenate(out) if out else np.zeros((0, num_classes), np.float32)
    return np.argmax(votes, -1)


def knn(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    ff = features.frozen_features(cfg, workdir)
    (x, y), (xv, yv), (xt, yt) = ff.train, ff.val, ff.test
    kc = cfg.knn
    pred = lambda q: knn_predict(x, y, q, ff.store.num_classes, int(kc.k), float(kc.temperature))  # noqa: E731
    ident = results.identity(cfg, ff.init, ff.subset, ff.store)
    extra = dict(k=int(kc.k), temperature=float(kc.temperature))
    return results.write(workdir, ident, (yv, pred(xv)), (yt, pred(xt)), extra)
