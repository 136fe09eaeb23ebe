"""The labelled data an evaluation uses: the store (or a simulated one), its subset, its labels.

``data.store = ''`` simulates a hospital export with the phantom and converts it with the
same ``prepare images`` code a user runs, so the tiny configs need no data path.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np

from fetal_ssl_jax.data import records
from fetal_ssl_jax.data.labelled_store import LabelledStore


def simulate_store(path: str, preset: str = "tiny", seed: int = 0, size: int = 64, images: int = 0,
                   patients: int = 0, fractions: tuple[float, ...] = (1, 10, 100),
                   seeds: tuple[int, ...] = (0, 1, 2)) -> str:
    """Phantom export + ``prepare images`` into ``path`` (kept; rerunning is a no-op)."""
    from fetal_ssl_jax import phantom
    try:
        from data_prep import images as images_lib
    except ImportError as e:  # the data_prep package sits beside launch.py, not inside the library
        raise ImportError("simulating a labelled store needs data_prep (run from the repository root), "
                          "or pass --config.data.store=<labelled store>") from e
    export = os.path.join(path, "export")
    store = os.path.join(path, "store")
    if not os.path.exists(os.path.join(export, "labels.csv")):
        overrides = {k: v for k, v in (("images", images), ("labelled_patients", patients)) if v > 0}
        phantom.generate(export, preset=preset, seed=seed, **overrides)
    st = images_lib.ImageSettings(size=size, seeds=tuple(seeds), split_seed=seeds[0], fractions=tuple(fractions))
    images_lib.build(os.path.join(export, "labels.csv"), export, store, st, workers=0, progress=False)
    return store


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
    from fetal_ssl_jax.evaluate.features import to_size
    images, labels = store.load_split(split)
    if len(labels) == 0:
        raise ValueError(f"{store.path}: the {split} split is empty; it needs patients of its own")
    return to_size(images, size), labels
