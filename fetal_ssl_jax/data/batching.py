"""What every grain input pipeline here shares: epoch permutations and the batch-indexed dataset.

Element ``b`` of a dataset is the process-local slice of global batch ``b``, computed by a
picklable callable from (seed, b) alone; so pipelines are deterministic, independent of
the process count, and resume exactly from grain's iterator state.
"""
from __future__ import annotations

import functools
from typing import Callable

import grain
import ml_collections
import numpy as np


@functools.lru_cache(maxsize=8)
def permutation(n: int, seed: int, epoch: int, salt: int = 7919) -> np.ndarray:
    """A fresh permutation of range(n) per epoch (cached: consecutive batches share an epoch)."""
    return np.random.default_rng([seed, epoch, salt]).permutation(n)


def batch_dataset(make_batch: Callable[[int], dict], num_steps: int, cfg: ml_collections.ConfigDict
                  ) -> grain.IterDataset:
    """IterDataset of ``num_steps`` batches; ``cfg.prefetch`` threads, ``cfg.workers`` processes."""
    ds = grain.MapDataset.range(num_steps).map(make_batch)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, int(cfg.prefetch)),
                                              prefetch_buffer_size=max(1, int(cfg.prefetch))))
    if int(cfg.workers) > 0:
        # grain's worker processes read absl flags, which only absl.app parses; launch.py uses argparse.
        from absl import flags
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(cfg.workers)))
    return it
