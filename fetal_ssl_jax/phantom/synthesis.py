"""Patients, sweep videos and labelled stills as arrays (no files): the deterministic core.

Every random stream is keyed by (seed, what, patient, item), so a video or a still does
not depend on what else is generated or in which order -- the same seed gives the same
pixels whether one asks for one video or a thousand.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from fetal_ssl_jax.phantom import anatomy as A
from fetal_ssl_jax.phantom import scanner as S
from fetal_ssl_jax.phantom import sweep as W
from fetal_ssl_jax.phantom.presets import PhantomConfig

CHUNK = 16  # frames rendered per call: bounds memory, amortises per-call overhead
_FETUS, _STYLE, _VIDEO, _STILL, _CLASSES = 1, 2, 3, 4, 5


def rng_for(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *[int(k) for k in key]])


def patient_id(index: int) -> str:
    return f"P{index:04d}"


def fetus_of(seed: int, index: int, variation: float) -> A.Fetus:
    return A.sample_fetus(rng_for(seed, _FETUS, index), variation)


def style_of(seed: int, index: int, n_styles: int) -> S.Style:
    """A patient's exams happen on one machine (hospitals scan a patient where she is booked)."""
    k = int(rng_for(seed, _STYLE, index).integers(0, max(1, min(n_styles, len(S.STYLES)))))
    return S.STYLES[k]


def render_video(cfg: PhantomConfig, seed: int, patient: int, video: int,
                 frames: int | None = None) -> tuple[np.ndarray, dict]:
    """One sweep video uint8 [T, H, W] and its ground truth (s, plane, cardiac phase per frame)."""
    n = int(frames or cfg.frames)
    rng = rng_for(seed, _VIDEO, patient, video)
    fetus = fetus_of(seed, patient, cfg.variation)
    style = style_of(seed, patient, cfg.styles)
    size = (cfg.image_size, cfg.image_size)
    s = W.sweep_positions(rng, n)
    phase = W.cardiac_phase(rng, n, cfg.fps, fetus.heart_rate_bpm)
    pose = W.video_pose(rng, n, W.base_pose(rng, cfg.rotation_deg))
    ren = S.Renderer(fetus, style, size, rng, fps=cfg.fps, jitter=cfg.style_jitter, temporal=True)
    out = np.empty((n, *size), dtype=np.uint8)
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        sl = slice(a, b)
        p = S.Pose(pose.cx[sl], pose.cz[sl], pose.radius[sl], pose.angle[sl], pose.mirror[sl])
        out[a:b] = ren.render(s[sl], phase[sl], p)
    meta = {
        "patient_id": patient_id(patient), "fps": cfg.fps, "num_frames": n, "height": size[0], "width": size[1],
        "style": style.name, "heart_rate_bpm": round(fetus.heart_rate_bpm, 2),
        "s": [round(float(x), 5) for x in s],
        "plane": [str(x) for x in A.plane_of(s)],
        "cardiac_phase": [round(float(x), 4) for x in phase],
    }
    return out, meta


def still_positions(rng: np.random.Generator, classes: Sequence[int], fetus: A.Fetus, jitter: float) -> np.ndarray:
    """Sweep positions of stills: near each plane's keyframe, where a sonographer freezes the image."""
    base = np.array([A.KEYFRAMES[A.CLASSES[c]] for c in classes]) + fetus.plane_offset
    return base + rng.uniform(-1, 1, len(classes)) * jitter * A.PLANE_HALF_WIDTH


def render_stills(cfg: PhantomConfig, seed: int, patient: int, classes: Sequence[int]) -> np.ndarray:
    """Labelled stills uint8 [N, H, W] of one patient, in exams of <= CHUNK images (one setting each)."""
    fetus = fetus_of(seed, patient, cfg.variation)
    style = style_of(seed, patient, cfg.styles)
    size = (cfg.image_size, cfg.image_size)
    out = np.empty((len(classes), *size), dtype=np.uint8)
    for k, a in enumerate(range(0, len(classes), CHUNK)):
        cl = list(classes[a:a + CHUNK])
        rng = rng_for(seed, _STILL, patient, k)
        s = still_positions(rng, cl, fetus, cfg.still_jitter)
        phase = rng.uniform(0, 1, len(cl))
        pose = W.still_poses(rng, len(cl), cfg.rotation_deg)
        ren = S.Renderer(fetus, style, size, rng, fps=cfg.fps, jitter=cfg.style_jitter, temporal=False)
        out[a:a + len(cl)] = ren.render(s, phase, pose)
    return out


def allocate_classes(cfg: PhantomConfig, seed: int) -> list[list[int]]:
    """Class of every still, per labelled patient: exact unbalanced totals, shuffled over patients."""
    n = int(cfg.images)
    freq = np.asarray(cfg.class_frequencies, dtype=np.float64)
    freq = freq / freq.sum()
    counts = np.floor(freq * n).astype(int)
    counts = np.maximum(counts, 1 if n >= len(freq) else 0)
    while counts.sum() < n:
        counts[np.argmax(freq * n - counts)] += 1
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    labels = np.repeat(np.arange(len(freq)), counts)
    rng_for(seed, _CLASSES).shuffle(labels)
    per = np.array_split(labels, max(1, cfg.labelled_patients))
    return [sorted(int(x) for x in p) for p in per]


def labelled_patient_index(cfg: PhantomConfig, i: int) -> int:
    """Overlapping: the i-th video patient; disjoint: a fetus never seen in any video."""
    return i if cfg.overlap else cfg.video_patients() + i


def iter_videos(cfg: PhantomConfig, seed: int) -> Iterator[tuple[str, int, int]]:
    for p in range(cfg.video_patients()):
        for v in range(cfg.videos_per_video_patient()):
            yield f"{patient_id(p)}_v{v:02d}", p, v
