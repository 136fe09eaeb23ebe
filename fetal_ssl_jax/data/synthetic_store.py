"""A small frame store made on the fly from the fetal-echo simulator, so every `tiny` config
runs with no data path."""
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
