"""The synthetic fetal-echo simulator: the project's embedded default dataset.

Public API::

    generate(out_dir, preset="tiny", seed=0, **overrides) -> summary dict   # files, as a hospital export
    sweep_frames(num_videos, num_frames, size, seed, ...)  -> iterator of (video_id, patient_id, uint8 [T,H,W])
    labelled_images(n_per_class, size, seed, ...)          -> (uint8 [N,H,W], int labels [N], patient_ids [N])

Classes (label index order): CLASSES = ("4CH", "LVOT", "RVOT", "3VV", "3VT"). See
README.md ("The synthetic fetal-echo dataset") for what is modelled, and the module docstrings for how.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np

from fetal_ssl_jax.phantom.anatomy import CLASSES, KEYFRAMES, plane_of
from fetal_ssl_jax.phantom.presets import PRESETS, PhantomConfig, resolve

__all__ = ["CLASSES", "KEYFRAMES", "PRESETS", "PhantomConfig", "generate", "labelled_images", "plane_of",
           "resolve", "sweep_frames"]


def generate(out_dir: str, preset: str = "tiny", seed: int = 0, progress: bool = False, workers: int | None = None,
             **overrides: Any) -> dict:
    """Write a simulated hospital export (videos/, images/, labels.csv) and return its summary.

    overrides: any PhantomConfig field (image_size, patients, videos, frames, images, format, design,
    video_variability, ...).
    workers: render threads (default min(2, cores)); the bytes written do not depend on it.
    """
    from fetal_ssl_jax.phantom import export
    return export.generate(out_dir, resolve(preset, **overrides), seed=seed, progress=progress, workers=workers)


def sweep_frames(num_videos: int = 2, num_frames: int = 32, size: int = 64, seed: int = 0,
                 videos_per_patient: int = 1, **overrides: Any) -> Iterator[tuple[str, str, np.ndarray]]:
    """Unlabelled sweep videos in memory: yields (video_id, patient_id, frames uint8 [T, H, W])."""
    from fetal_ssl_jax.phantom import synthesis as Y
    vpp = max(1, int(videos_per_patient))
    cfg = resolve("tiny", image_size=size, frames=num_frames, patients=-(-num_videos // vpp),
                  videos_per_patient=vpp, **overrides)
    for k, (vid, p, v) in enumerate(Y.iter_videos(cfg, seed)):
        if k >= num_videos:
            break
        frames, _ = Y.render_video(cfg, seed, p, v)
        yield vid, Y.patient_id(p), frames


def labelled_images(n_per_class: int | Sequence[int] = 10, size: int = 64, seed: int = 0, num_patients: int = 8,
                    patient_offset: int = 10_000, **overrides: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled stills in memory: (images uint8 [N, H, W], labels int64 [N], patient_ids str [N]).

    n_per_class: one count for every class, or a count per class in CLASSES order. Images
    are spread round-robin over num_patients fetuses (ids from patient_offset, so they do
    not coincide with sweep_frames' patients unless asked); split by patient for honest tests.
    """
    from fetal_ssl_jax.phantom import synthesis as Y
    counts = [int(n_per_class)] * len(CLASSES) if np.isscalar(n_per_class) else [int(x) for x in n_per_class]
    if len(counts) != len(CLASSES):
        raise ValueError(f"n_per_class needs {len(CLASSES)} counts, got {len(counts)}")
    cfg = resolve("tiny", image_size=size, **overrides)
    labels = np.repeat(np.arange(len(CLASSES)), counts)
    owner = np.arange(labels.size) % max(1, num_patients)
    images = np.empty((labels.size, size, size), dtype=np.uint8)
    for p in range(max(1, num_patients)):
        idx = np.flatnonzero(owner == p)
        if idx.size:
            images[idx] = Y.render_stills(cfg, seed, patient_offset + p, labels[idx].tolist())
    pids = np.array([Y.patient_id(patient_offset + int(p)) for p in owner])
    return images, labels.astype(np.int64), pids
