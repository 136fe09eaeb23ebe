"""A small frame store made on the fly, so every `tiny` config runs with no data path.

Frames come from the fetal-echo simulator when it is available, else from a
shapes-and-noise generator (rings and blobs under multiplicative speckle).
"""
from __future__ import annotations

import os

import numpy as np

from fetal_ssl_jax.data.frame_store import MANIFEST, FrameStore, FrameStoreWriter


def _shapes_video(rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
    out = np.empty((frames, size, size), np.uint8)
    for t in range(frames):
        rt = r * (1 + 0.15 * np.sin(2 * np.pi * t / 8))
        d = np.hypot(xx - cx, yy - cy)
        img = 0.2 + 0.6 * (np.abs(d - rt) < 0.03) + 0.3 * (d < rt * 0.5)
        img = img * rng.rayleigh(0.8, img.shape)
        out[t] = np.clip(img * 180, 0, 255).astype(np.uint8)
    return out


def _videos(num_videos: int, frames: int, size: int, seed: int):
    try:
        from fetal_ssl_jax import phantom
        if hasattr(phantom, "sweep_frames"):
            yield from phantom.sweep_frames(num_videos=num_videos, num_frames=frames, size=size, seed=seed)
            return
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    for v in range(num_videos):
        yield f"v{v:03d}", f"p{v // 2:03d}", _shapes_video(rng, frames, size)


def ensure_synthetic_store(path: str, num_videos: int, frames: int, size: int, seed: int = 0) -> FrameStore:
    """Creates the store once (idempotent: an existing complete store is reused)."""
    if not os.path.exists(os.path.join(path, MANIFEST)):
        w = FrameStoreWriter(path, manifest_extra={"source": "synthetic", "seed": seed})
        for vid, pid, frames_arr in _videos(num_videos, frames, size, seed):
            w.add_video(vid, pid, list(frames_arr))
        w.close()
    return FrameStore.open(path)
