"""Frozen forward passes: jitted, batch sharded over the 'data' mesh axis, outputs replicated.

Used for the probe's and kNN's features and for fine-tuning's validation/test logits.
The network runs with ``train=False`` and no mutable collections, so BatchNorm uses its
running statistics and cannot update them (flax raises if anything tries). Features are
cached in the workdir as .npz, keyed by everything they depend on. ``frozen_features``
is the one opening of the frozen-encoder protocols (probe, kNN): store, init, subset, features.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from fetal_ssl_jax.data.host_augment import to_size
from fetal_ssl_jax.data.labelled_store import LabelledStore
from fetal_ssl_jax.evaluate import init as init_lib
from fetal_ssl_jax.evaluate import labelled_data
from fetal_ssl_jax.train import mesh as mesh_lib


class ShardedForward:
    """``apply_fn(variables, x)`` jitted once; call with uint8 images [N, H, W] -> NumPy outputs [N, ...]."""

    def __init__(self, apply_fn: Callable[[Any, jax.Array], jax.Array], mean: float, std: float,
                 batch_size: int, mesh=None):
        self.mesh = mesh if mesh is not None else mesh_lib.make_mesh()
        n_dev = self.mesh.devices.size
        self.batch = max(n_dev, -(-int(batch_size) // n_dev) * n_dev)  # a multiple of the device count
        rep, data = mesh_lib.replicated(self.mesh), mesh_lib.batch_sharding(self.mesh)

        def fwd(variables, images_u8):
            x = (images_u8.astype(jnp.float32)[..., None] / 255.0 - mean) / std
            return apply_fn(variables, x)

        self._fn = jax.jit(mesh_lib.under_mesh(fwd, self.mesh), in_shardings=(rep, data), out_shardings=rep)
        self._data = data
        self._rep = rep

    def __call__(self, variables: Any, images: np.ndarray, progress: bool = False, desc: str = "forward"
                 ) -> np.ndarray:
        variables = jax.device_put(variables, self._rep)
        n, b = len(images), self.batch
        p, pc = jax.process_index(), jax.process_count()
        outs = []
        starts = range(0, max(n, 1), b)
        if progress and jax.process_index() == 0:
            from tqdm import tqdm
            starts = tqdm(starts, desc=desc, unit="batch", leave=False)
        for s in starts:
            chunk = images[s:s + b]
            if len(chunk) < b:  # pad the last batch; padded rows are dropped below
                chunk = np.concatenate([chunk, np.zeros((b - len(chunk),) + images.shape[1:], images.dtype)])
            local = chunk[p * b // pc:(p + 1) * b // pc]  # every process holds the whole eval set
            arr = jax.make_array_from_process_local_data(self._data, np.ascontiguousarray(local))
            outs.append(self._fn(variables, arr))
        out = np.concatenate([np.asarray(jax.device_get(o)) for o in outs])
        return out[:n]


def backbone_apply(model) -> Callable[[Any, jax.Array], jax.Array]:
    """Eval-mode apply: running BN statistics, nothing mutable."""
    return lambda variables, x: model.apply(variables, x, train=False)


def cache_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(path: str, identity: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]
           ) -> dict[str, np.ndarray]:
    """Loads ``path`` (.npz) if it was made for the same ``identity``, else computes and saves it."""
    key = cache_key(identity)
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            if str(z["_key"]) == key:
                return {k: z[k] for k in z.files if k != "_key"}
    arrays = compute()
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"  # concurrent jobs of a sweep may write the same shared file
        np.savez(tmp, _key=np.asarray(key), **arrays)
        os.replace(tmp, path)
    return arrays


def encoder_features(cfg, workdir: str, store, init, subset, progress: bool = False
                     ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Frozen-encoder features of the train subset, val and test: ({split: (X, y)}, variables used).

    Cached in ``<workdir>/features/<split>.npz``; a random encoder is drawn from ``cfg.seed``. With
    ``data.feature_cache`` (a folder shared by the jobs of a sweep), files are named by what they depend on
    and the whole train split is extracted once, each subset taking its rows: the probes and kNN runs of one
    encoder over every fraction and seed then make one forward pass over the store between them.
    """
    from fetal_ssl_jax.models import build_backbone, initialise

    model = build_backbone(init.model_cfg)
    size = int(init.image_size)
    if init.variables is not None:
        variables = init.variables
    else:
        variables = initialise.init_module(model, jax.random.key(int(cfg.seed)), jnp.zeros((1, size, size, 1)),
                                           train=False)
        variables = jax.tree.map(np.asarray, dict(variables))
    forward = ShardedForward(backbone_apply(model), init.mean, init.std, int(cfg.data.eval_batch_size))
    base = dict(init=init.identity(), model=init.model_cfg.to_dict(), size=size, mean=init.mean, std=init.std,
                store=os.path.abspath(store.path), manifest=store.manifest.get("csv_sha256", ""),
                seed=int(cfg.seed) if init.variables is None else None)
    shared = str(cfg.data.get("feature_cache", "") or "")
    out = {}
    for split in ("train", "val", "test"):
        idx = subset.indices if split == "train" and not shared else None

        def compute(split=split, idx=idx):
            if idx is None:
                x, y = labelled_data.load_eval_split(store, split, size)
            else:
                x, y = store.load_split(split, idx)
                x = to_size(x, size)
            return {"features": forward(variables, x, progress, f"features {split}"), "labels": y}

        ident = dict(base, split=split, indices=cache_key({"i": None if idx is None else idx.tolist()}))
        path = (os.path.join(shared, f"{split}-{cache_key(ident)}.npz") if shared
                else os.path.join(workdir, "features", f"{split}.npz"))
        arrays = cached(path, ident, compute)
        x, y = arrays["features"], arrays["labels"]
        if shared and split == "train":
            x, y = x[subset.indices], y[subset.indices]
        out[split] = (x.astype(np.float32), y.astype(np.int32))
    return out, variables


@dataclasses.dataclass
class FrozenFeatures:
    """What an evaluator over a frozen encoder starts from: (X, y) per split and where they came from."""
    store: LabelledStore
    init: init_lib.Init
    subset: labelled_data.Subset
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def frozen_features(cfg, workdir: str) -> FrozenFeatures:
    """The labelled store, the initialisation, the label subset and the frozen features of train subset, val, test."""
    store = labelled_data.open_store(cfg, workdir)
    init = init_lib.resolve(cfg)
    subset = labelled_data.train_subset(store, cfg)
    feats, _ = encoder_features(cfg, workdir, store, init, subset, bool(cfg.train.progress))
    return FrozenFeatures(store, init, subset, feats["train"], feats["val"], feats["test"])
