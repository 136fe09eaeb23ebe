"""grain pipeline of labelled training batches for fine-tuning (host: decode, crop, flip).

Mirrors the pretraining pipeline: element ``b`` is this process's slice of global batch
``b``, a pure function of (seed, b), so it is deterministic, independent of the process
count, and resumes exactly from the grain iterator state saved with the checkpoint.
Samples cycle through a fresh permutation of the label subset every epoch.
"""
from __future__ import annotations

from typing import Any

import grain
import ml_collections
import numpy as np

from fetal_ssl_jax.data import batching, host_augment, records
from fetal_ssl_jax.data.labelled_store import LabelledStore


def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return batching.permutation(n, seed, epoch, salt=6151)


class LabelledBatches:
    """Callable: global batch index -> {'image' uint8 [b, S, S], 'label' int32 [b], 'sample_id' int32 [b]}."""

    def __init__(self, store: LabelledStore, indices: np.ndarray, cfg: ml_collections.ConfigDict, size: int,
                 global_batch: int, seed: int, process_index: int = 0, process_count: int = 1):
        if global_batch % process_count:
            raise ValueError(f"global batch {global_batch} is not divisible by {process_count} processes")
        self.store, self.cfg, self.size, self.seed = store, cfg, int(size), int(seed)
        self.indices = np.asarray(indices, np.int64)
        if self.indices.size == 0:
            raise ValueError("no training images in the label subset")
        self.global_batch = global_batch
        self.local = global_batch // process_count
        self.offset = process_index * self.local
        self._src = None

    @property
    def src(self):
        if self._src is None:  # opened lazily so the object pickles into grain workers
            self._src = self.store.source("train")
        return self._src

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_src"] = None
        return d

    def __call__(self, b: int, _unused: Any = None) -> dict[str, np.ndarray]:
        cfg, n = self.cfg, len(self.indices)
        images = np.empty((self.local, self.size, self.size), np.uint8)
        labels = np.empty((self.local,), np.int32)
        ids = np.empty((self.local,), np.int32)
        for r in range(self.local):
            pos = b * self.global_batch + self.offset + r
            epoch, i = divmod(pos, n)
            rec = records.unpack(self.src[int(self.indices[_permutation(n, self.seed, epoch)[i]])])
            rng = np.random.default_rng([self.seed, pos, 92821])
            img = host_augment.random_resized_crop(records.decode_image(rec), self.size, rng,
                                                   tuple(cfg.crop_scale), tuple(cfg.crop_ratio))
            images[r] = host_augment.maybe_flip(img, rng, bool(cfg.hflip))
            labels[r], ids[r] = int(rec["label"]), pos
        return {"image": images, "label": labels, "sample_id": ids}


def make_dataset(store: LabelledStore, indices: np.ndarray, cfg: ml_collections.ConfigDict, size: int,
                 global_batch: int, num_steps: int, seed: int, process_index: int = 0,
                 process_count: int = 1) -> grain.IterDataset:
    fn = LabelledBatches(store, indices, cfg, size, global_batch, seed, process_index, process_count)
    return batching.batch_dataset(fn, num_steps, cfg)
