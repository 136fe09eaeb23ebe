"""Small stores made on the fly from the fetal-echo simulator, so every `tiny` config runs with no data
path: a frame store for pretraining, a labelled store for evaluation (and the tests)."""
from __future__ import annotations

import os

from fetal_ssl_jax.data.frame_store import MANIFEST, FrameStore, FrameStoreWriter


def ensure_synthetic_store(path: str, num_videos: int, frames: int, size: int, seed: int = 0) -> FrameStore:
    """Creates the store once (idempotent: an existing complete store is reused)."""
    if not os.path.exists(os.path.join(path, MANIFEST)):
        from fetal_ssl_jax import phantom

        w = FrameStoreWriter(path, manifest_extra={"source": "phantom.sweep_frames", "seed": seed})
        for vid, pid, frames_arr in phantom.sweep_frames(num_videos=num_videos, num_frames=frames, size=size,
                                                         seed=seed):
            w.add_video(vid, pid, list(frames_arr))
        w.close()
    return FrameStore.open(path)


def simulate_store(path: str, preset: str = "tiny", seed: int = 0, size: int = 64, images: int = 0,
                   patients: int = 0, fractions: tuple[float, ...] = (1, 10, 100),
                   seeds: tuple[int, ...] = (0, 1, 2)) -> str:
    """A labelled store from the simulator: phantom export + ``prepare images`` into ``path``/store (kept;
    rerunning is a no-op). Returns the store's path."""
    from fetal_ssl_jax import phantom
    from fetal_ssl_jax.data import labelled_builder

    export = os.path.join(path, "export")
    store = os.path.join(path, "store")
    if not os.path.exists(os.path.join(export, "labels.csv")):
        overrides = {k: v for k, v in (("images", images), ("labelled_patients", patients)) if v > 0}
        phantom.generate(export, preset=preset, seed=seed, **overrides)
    st = labelled_builder.ImageSettings(size=size, seeds=tuple(seeds), split_seed=seeds[0], fractions=tuple(fractions))
    labelled_builder.build(os.path.join(export, "labels.csv"), export, store, st, workers=0, progress=False)
    return store
