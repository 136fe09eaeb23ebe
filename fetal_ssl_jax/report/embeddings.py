"""Embedding maps: each encoder's frozen features of the labelled test set, reduced to 2-D with t-SNE.

The features come from the same eval-mode backbone forward the probe uses (running BN
statistics), so the map shows what a linear probe sees. A randomly initialised network
of the first encoder's architecture is drawn as the reference. Capped at ``max_points``
images (stratified by class) so the map costs seconds, not minutes.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


def find_encoders(root: str) -> dict[str, str]:
    """Label -> pretraining workdir for every SSL encoder under ``root`` (fine-tuned ones are skipped)."""
    out: dict[str, str] = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in ("checkpoints", "features", "selected", "logs"))
        meta_path = os.path.join(d, "encoder", "encoder.json")
        if "metrics.json" in files or not os.path.exists(meta_path):
            continue
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("method") in (None, "supervised"):
            continue
        label = str(meta["method"])
        sj = os.path.join(d, "sweep_job.json")
        if os.path.exists(sj):
            with open(sj) as f:
                label = json.load(f).get("init", label)
        out[label] = d
    return dict(sorted(out.items()))


def _sample(labels: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    if len(labels) <= max_points:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = max(1, max_points // len(classes))
    idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes])
    return np.sort(idx)


def features(model_cfg: Any, variables: dict[str, Any] | None, images: np.ndarray, size: int, mean: float,
             std: float, seed: int = 0, batch: int = 64) -> np.ndarray:
    """Pooled backbone features [N, D] (eval mode); ``variables`` None = random init from ``seed``."""
    import jax
    import jax.numpy as jnp
    from fetal_ssl_jax.data.host_augment import to_size
    from fetal_ssl_jax.evaluate.features import ShardedForward, backbone_apply
    from fetal_ssl_jax.models import build_backbone, initialise

    model = build_backbone(model_cfg)
    if variables is None:  # jitted: initialising a ResNet op by op compiles every op on its own
        variables = initialise.init_module(model, jax.random.key(seed), jnp.zeros((1, size, size, 1)), train=False)
    forward = ShardedForward(backbone_apply(model), mean, std, batch)
    return np.asarray(forward(variables, to_size(images, size)), np.float32)


def tsne(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    perplexity = float(max(2.0, min(30.0, (len(x) - 1) / 3.0)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def compute_maps(encoders: dict[str, str], store_path: str, max_points: int = 400, random_reference: bool = True,
                 progress: bool = True) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """{label: (t-SNE xy [N, 2], labels [N])} for every encoder (+ 'random'), and the class names."""
    from fetal_ssl_jax.data.labelled_store import LabelledStore
    from fetal_ssl_jax.train import encoder_io

    store = LabelledStore.open(store_path)
    images, labels = store.load_split("test")
    keep = _sample(labels, max_points)
    images, labels = images[keep], labels[keep]
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    first = None
    items = list(encoders.items())
    if progress:
        from tqdm import tqdm
        items = tqdm(items, desc="embedding maps", unit="encoder", leave=False)
    for label, wd in items:
        model_cfg, variables, meta = encoder_io.load_encoder(wd)
        norm = meta.get("normalize", {})
        size = int(meta.get("image_size", 64))
        variables = {"params": {k: v for k, v in variables["params"].items() if k != "fc"},
                     "batch_stats": variables.get("batch_stats", {})}
        feats = features(model_cfg, variables, images, size, float(norm.get("mean", 0.5)), float(norm.get("std", 0.25)))
        maps[label] = (tsne(feats), labels)
        first = first or (model_cfg, size, norm)
    if random_reference and first is not None:
        model_cfg, size, norm = first
        feats = features(model_cfg, None, images, size, float(norm.get("mean", 0.5)), float(norm.get("std", 0.25)))
        maps["random init"] = (tsne(feats), labels)
    return maps, list(store.classes)
