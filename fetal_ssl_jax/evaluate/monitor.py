"""Downstream quality while pretraining: a periodic kNN evaluator of the current encoder (``cfg.monitor``).

Config (configs/common.py ``monitor``): ``every`` (0 = off), ``labelled_store``, ``max_train``, ``max_val``,
``fraction``, ``k``, ``temperature``, ``batch_size``. Every ``monitor.every`` steps (and at the last step) the train loop calls :class:`KnnMonitor` with the step and the
state; it takes the backbone's variables (eval mode: running BatchNorm statistics, nothing mutable),
forwards a fixed subset of the labelled store's train split (the kNN bank, at most ``max_train`` images,
class-stratified) and val split (at most ``max_val``), and returns the kNN validation macro-F1 and
accuracy as ``knn_val_f1`` / ``knn_val_acc``, which the loop logs with that step's metrics (metrics.jsonl,
TensorBoard) and ``report`` plots against step.

It reads the state and writes nothing: no parameter, statistic, optimizer state or RNG of the training
stream is touched (the images are fixed at construction, the forward is deterministic), so a run with the
monitor gives the same parameters as one without (tests/test_monitor.py). The forward is
``features.ShardedForward`` (jitted once: the images are padded to fixed batches), batch split over the
mesh; every process calls it with the whole (small) subset and gets the replicated features, and computes
the same kNN; only process 0 writes the logs. A resumed run keeps logging at multiples of ``every``.
kNN is ``evaluate.knn.knn_predict`` (k nearest by cosine, votes exp(sim / T)), the same as the protocol's.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import ml_collections
import numpy as np

from fetal_ssl_jax.data.host_augment import to_size
from fetal_ssl_jax.data.labelled_store import LabelledStore
from fetal_ssl_jax.evaluate import features, labelled_data, metrics as metrics_lib
from fetal_ssl_jax.evaluate.knn import knn_predict


def stratified_cap(labels: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """Positions (sorted) of at most ``cap`` items, as many per class as possible (round-robin over classes
    in a fixed random order within each class); deterministic for a seed."""
    labels = np.asarray(labels)
    if cap <= 0 or len(labels) <= cap:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        rank[rng.permutation(pos)] = np.arange(len(pos))
    order = np.lexsort((rng.random(len(labels)), rank))  # rank first, ties in random order
    return np.sort(order[:cap])


def check(m: ml_collections.ConfigDict) -> None:
    if int(m.every) < 0:
        raise ValueError(f"monitor.every must be >= 0, got {m.every}")
    if int(m.every) > 0:
        if not m.labelled_store:
            raise ValueError("monitor.every > 0 needs monitor.labelled_store (a store from `launch.py prepare images`)")
        for key in ("max_train", "max_val", "k", "batch_size"):
            if int(m[key]) < 1:
                raise ValueError(f"monitor.{key} must be >= 1, got {m[key]}")
        if not float(m.temperature) > 0:
            raise ValueError(f"monitor.temperature must be > 0, got {m.temperature}")


class KnnMonitor:
    """``monitor(step, state) -> {'knn_val_f1', 'knn_val_acc', 'knn_seconds'} | None`` (None off its steps)."""

    def __init__(self, cfg: ml_collections.ConfigDict, encoder_variables: Callable[[Any, Any], Any],
                 total_steps: int, mesh=None):
        from fetal_ssl_jax.models import build_backbone

        m = cfg.monitor
        check(m)
        self.every, self.total = int(m.every), int(total_steps)
        self.k, self.temperature = int(m.k), float(m.temperature)
        self.encoder_variables = encoder_variables
        store = LabelledStore.open(m.labelled_store)
        self.classes, size = list(store.classes), int(cfg.data.image_size)
        train_idx = store.subset_indices(m.fraction, 0)
        train_idx = train_idx[stratified_cap(labelled_data.split_labels(store, "train", train_idx),
                                             int(m.max_train))]
        val_idx = stratified_cap(labelled_data.split_labels(store, "val"), int(m.max_val))
        if not len(train_idx) or not len(val_idx):
            raise ValueError(f"{store.path}: monitor needs non-empty train and val splits")
        xb, self.bank_labels = store.load_split("train", train_idx)
        xq, self.val_labels = store.load_split("val", val_idx)
        self.n_bank = len(xb)
        self.images = np.concatenate([to_size(xb, size), to_size(xq, size)])  # bank then queries, one forward
        self.forward = features.ShardedForward(features.backbone_apply(build_backbone(cfg.model)),
                                               float(cfg.aug.mean), float(cfg.aug.std), int(m.batch_size), mesh)

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.total

    def __call__(self, step: int, state: Any) -> dict[str, float] | None:
        if not self.due(step):
            return None
        return self.evaluate(self.encoder_variables(state.params, state.batch_stats))

    def evaluate(self, variables: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        feats = self.forward(variables, self.images)
        bank, queries = feats[:self.n_bank], feats[self.n_bank:]
        pred = knn_predict(bank, self.bank_labels, queries, len(self.classes), self.k, self.temperature)
        s = metrics_lib.summarize(self.val_labels, pred, self.classes)
        return {"knn_val_f1": s["macro_f1"], "knn_val_acc": s["accuracy"],
                "knn_seconds": time.perf_counter() - t0}


def make_monitors(cfg: ml_collections.ConfigDict, method: Any) -> tuple[KnnMonitor, ...]:
    """The pretraining monitors the config asks for (``train.pretrain(..., make_monitors=this)``)."""
    m = cfg.get("monitor")
    if m is None or int(m.get("every", 0)) <= 0:
        return ()
    return (KnnMonitor(cfg, method.encoder_variables, int(cfg.train.steps)),)
