"""The labelled data an evaluation uses: the store (or a simulated one), its subset, its labels.

``data.store = ''`` simulates a hospital export with the phantom and converts it with the
same ``prepare images`` code a user runs (data/synthetic_store.simulate_store), so the tiny
configs need no data path.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np

from fetal_ssl_jax.data import records
from fetal_ssl_jax.data.host_augment import to_size
from fetal_ssl_jax.data.labelled_store import LabelledStore
from fetal_ssl_jax.data.synthetic_store import simulate_store


def open_store(cfg: ml_collections.ConfigDict, workdir: str) -> LabelledStore:
    if cfg.data.store:
        return LabelledStore.open(cfg.data.store)
    path = os.path.join(workdir, "synthetic_labelled")
    size = max(32, int(cfg.data.image_size) or 64)
    seed = int(cfg.fraction_seed) if int(cfg.fraction_seed) >= 0 else int(cfg.seed)
    make = lambda: simulate_store(path, str(cfg.data.synthetic_preset), 0, size,  # noqa: E731
                                  int(cfg.data.synthetic_images), int(cfg.data.synthetic_patients),
                                  fractions=tuple(sorted({1.0, 10.0, 100.0, float(cfg.fraction)})),
                                  seeds=(0,) + tuple(sorted({1, 2, seed} - {0})))
    if jax.process_index() == 0:
        make()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("synthetic labelled store")
    return LabelledStore.open(os.path.join(path, "store"))


def split_labels(store: LabelledStore, split: str, indices: np.ndarray | None = None) -> np.ndarray:
    """Labels of a split (or of some of its records) without decoding the images."""
    src = store.source(split)
    idx = range(len(src)) if indices is None else [int(i) for i in indices]
    return np.asarray([records.unpack(src[i])["label"] for i in idx], np.int32)


@dataclasses.dataclass
class Subset:
    """The label fraction actually trained on: record indices into train, and their labels."""
    fraction: float
    seed: int
    indices: np.ndarray
    labels: np.ndarray


def train_subset(store: LabelledStore, cfg: ml_collections.ConfigDict) -> Subset:
    seed = int(cfg.fraction_seed) if int(cfg.fraction_seed) >= 0 else int(cfg.seed)
    idx = store.subset_indices(cfg.fraction, seed)
    if idx.size == 0:
        raise ValueError(f"{store.path}: the {cfg.fraction}% subset for seed {seed} is empty")
    return Subset(float(cfg.fraction), seed, idx, split_labels(store, "train", idx))


def load_eval_split(store: LabelledStore, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, size, size], labels [N]) of val or test, whole (eval sets are small)."""
    images, labels = store.load_split(split)
    if len(labels) == 0:
        raise ValueError(f"{store.path}: the {split} split is empty; it needs patients of its own")
    return to_size(images, size), labels
