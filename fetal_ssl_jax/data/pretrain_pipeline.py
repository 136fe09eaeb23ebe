"""grain input pipeline for SSL pretraining over a frame store.

Element ``b`` of the dataset is this process's slice of global batch ``b``: a pure
function of (seed, b), so the pipeline is deterministic, the same on any number of
processes (process p holds rows [p*B/P, (p+1)*B/P) of the global batch), and resumes
exactly from the grain iterator state. Sample order: a fresh permutation per epoch.
"""
from __future__ import annotations

from typing import Any

import grain
import ml_collections
import numpy as np

from fetal_ssl_jax.data import batching, host_augment
from fetal_ssl_jax.data.frame_store import FrameStore, decode_frame




class PretrainBatches:
    """Callable that builds one process-local batch of two views from a global batch index."""

    def __init__(self, store: FrameStore, cfg: ml_collections.ConfigDict, global_batch: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        if global_batch % process_count:
            raise ValueError(f"global batch {global_batch} is not divisible by {process_count} processes")
        self.store, self.cfg, self.seed = store, cfg, seed
        self.global_batch = global_batch
        self.local = global_batch // process_count
        self.offset = process_index * self.local
        self.n = len(store)
        if self.n == 0:
            raise ValueError(f"frame store {store.path} holds no frames")
        self._src = None
        self.ranges = store.video_ranges() if cfg.temporal_window > 0 else None

    @property
    def src(self):
        if self._src is None:  # opened lazily so the object pickles into grain workers
            self._src = self.store.source()
        return self._src

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_src"] = None
        return d

    def record_index(self, pos: int) -> int:
        epoch, i = divmod(pos, self.n)
        return int(batching.permutation(self.n, self.seed, epoch)[i])

    def partner_index(self, idx: int, rng: np.random.Generator) -> int:
        """Another frame of the same video within +-temporal_window (itself if the video has one frame)."""
        start, end = self.ranges[idx]
        w = int(self.cfg.temporal_window)
        lo, hi = max(start, idx - w), min(end - 1, idx + w)
        if hi == lo:
            return idx
        j = int(rng.integers(lo, hi))  # in [lo, hi): skip idx itself
        return j + 1 if j >= idx else j

    def __call__(self, b: int, _unused: Any = None) -> dict[str, np.ndarray]:
        cfg, size = self.cfg, int(self.cfg.image_size)
        v1 = np.empty((self.local, size, size), np.uint8)
        v2 = np.empty_like(v1)
        ids = np.empty((self.local,), np.int32)
        idx1 = np.empty((self.local,), np.int64)
        idx2 = np.empty((self.local,), np.int64)
        for r in range(self.local):
            pos = b * self.global_batch + self.offset + r
            rng = np.random.default_rng([self.seed, pos, 104729])
            i = self.record_index(pos)
            img = decode_frame(self.src[i])["image"]
            j = self.partner_index(i, rng) if self.ranges is not None else i
            img2 = img if j == i else decode_frame(self.src[j])["image"]
            for out, im in ((v1, img), (v2, img2)):
                crop = host_augment.rotated_resized_crop(im, size, rng, float(cfg.get("rotation", 0.0)),
                                                         tuple(cfg.crop_scale), tuple(cfg.crop_ratio))
                out[r] = host_augment.maybe_flip(crop, rng, cfg.hflip)
            ids[r], idx1[r], idx2[r] = pos, i, j
        return {"view1": v1, "view2": v2, "sample_id": ids, "index": idx1, "index2": idx2}


def make_dataset(store: FrameStore, cfg: ml_collections.ConfigDict, global_batch: int, num_steps: int,
                 seed: int, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
    """IterDataset of ``num_steps`` process-local batches (checkpointable iterator state)."""
    fn = PretrainBatches(store, cfg, global_batch, seed, process_index, process_count)
    return batching.batch_dataset(fn, num_steps, cfg)
