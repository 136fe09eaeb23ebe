"""Patients, sweep videos and labelled stills as arrays (no files): the deterministic core.

Every random stream is keyed by (seed, what, patient, item), so a video or a still does
not depend on what else is generated or in which order -- the same seed gives the same
pixels whether one asks for one video or a thousand.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from scipy.special import ndtr, ndtri

from fetal_ssl_jax.phantom import anatomy as A
from fetal_ssl_jax.phantom import scanner as S
from fetal_ssl_jax.phantom import sweep as W
from fetal_ssl_jax.phantom.presets import PhantomConfig

CHUNK = 16  # frames rendered per call: bounds memory, amortises per-call overhead
_FETUS, _STYLE, _VIDEO, _STILL, _CLASSES, _EXAM = 1, 2, 3, 4, 5, 6
# the parts of a video's set-up that video_variability shares with its patient; each has its own patient
# stream, so a branch in one part (placenta or not) never shifts another part's patient draws
EXAM_PARTS = {"path": 1, "pose": 2, "acoustics": 3, "background": 4, "screen": 5}


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


class SharedDraws:
    """A random stream for one video whose values its patient's other videos share, to a degree.

    Each call draws from the video's own stream exactly what ``numpy.random.Generator`` would (so the
    video stream is consumed identically at every variability, and everything drawn from it later --
    sweep timing, cardiac phase, tremor, speckle -- does not move with the knob), draws the same from the
    patient's stream, and mixes the two in normal scores: z = sqrt(1 - v) z_patient + sqrt(v) z_video.
    Every value keeps its distribution; two videos of one patient correlate 1 - v (in normal scores).
    v = 1 returns the video's values unchanged, v = 0 the patient's.
    """

    _EPS = 1e-12

    def __init__(self, own: np.random.Generator, shared: np.random.Generator, variability: float):
        self.own, self.shared, self.v = own, shared, float(variability)

    def _unit(self, u_own: Any, u_shared: Any) -> Any:
        """Mix two uniforms in [0, 1) (through normal scores) into one uniform in [0, 1)."""
        if self.v >= 1.0:
            return u_own
        if self.v <= 0.0:
            return u_shared
        lo, hi = self._EPS, 1.0 - self._EPS
        z = np.sqrt(1.0 - self.v) * ndtri(np.clip(u_shared, lo, hi)) + np.sqrt(self.v) * ndtri(np.clip(u_own, lo, hi))
        return np.minimum(ndtr(z), np.nextafter(1.0, 0.0))

    @staticmethod
    def _out(x: Any, size: Any, kind: type = float) -> Any:
        return kind(x) if size is None else np.asarray(x)

    def random(self, size: Any = None) -> Any:
        a, b = self.own.random(size), self.shared.random(size)
        if self.v >= 1.0:
            return a
        return self._out(self._unit(a, b), size)

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None) -> Any:
        a, b = self.own.uniform(low, high, size), self.shared.uniform(low, high, size)
        if self.v >= 1.0:
            return a
        if self.v <= 0.0:
            return b
        w = float(high) - float(low)
        return self._out(low + w * self._unit((np.asarray(a) - low) / w, (np.asarray(b) - low) / w), size)

    def standard_normal(self, size: Any = None) -> Any:
        a, b = self.own.standard_normal(size), self.shared.standard_normal(size)
        if self.v >= 1.0:
            return a
        return self._out(np.sqrt(1.0 - self.v) * np.asarray(b) + np.sqrt(self.v) * np.asarray(a), size)

    def integers(self, low: int, high: int, size: Any = None) -> Any:
        a, b = self.own.integers(low, high, size), self.shared.integers(low, high, size)
        if self.v >= 1.0:
            return a
        if self.v <= 0.0:
            return b
        n = int(high) - int(low)  # cell midpoints as uniforms: close to, not exactly, uniform for small n
        u = self._unit((np.asarray(a) - low + 0.5) / n, (np.asarray(b) - low + 0.5) / n)
        return self._out(low + np.minimum(np.floor(u * n), n - 1).astype(np.int64), size, int)


def exam_draws(seed: int, patient: int, rng: np.random.Generator, variability: float) -> Callable[[str], Any]:
    """part name (EXAM_PARTS) -> the stream a video draws that part of its set-up from.

    variability 1: the video's own stream ``rng`` itself (the historical draws, byte for byte).
    """
    if float(variability) >= 1.0:
        return lambda part: rng
    return lambda part: SharedDraws(rng, rng_for(seed, _EXAM, patient, EXAM_PARTS[part]), variability)


@dataclasses.dataclass
class VideoScene:
    """Everything random about one video before its pixels: sweep, phase, poses, renderer (set-up drawn)."""
    fetus: A.Fetus
    style: S.Style
    s: np.ndarray            # [T] sweep position
    phase: np.ndarray        # [T] cardiac phase
    base_pose: dict          # the video's pose before tremor and fetal movement
    pose: S.Pose             # [T]
    renderer: S.Renderer


def video_scene(cfg: PhantomConfig, seed: int, patient: int, video: int, frames: int | None = None) -> VideoScene:
    """Draw one video's sweep, cardiac phase, pose and exam settings (the video stream in a fixed order)."""
    n = int(frames or cfg.frames)
    rng = rng_for(seed, _VIDEO, patient, video)
    exam = exam_draws(seed, patient, rng, cfg.video_variability)
    fetus = fetus_of(seed, patient, cfg.variation)
    style = style_of(seed, patient, cfg.styles)
    size = (cfg.image_size, cfg.image_size)
    s = W.sweep_positions(rng, n, path=exam("path"))
    phase = W.cardiac_phase(rng, n, cfg.fps, fetus.heart_rate_bpm)
    base = W.base_pose(exam("pose"), cfg.rotation_deg)
    pose = W.video_pose(rng, n, base)
    ren = S.Renderer(fetus, style, size, rng, fps=cfg.fps, jitter=cfg.style_jitter, temporal=True, exam=exam)
    return VideoScene(fetus, style, s, phase, base, pose, ren)


def render_video(cfg: PhantomConfig, seed: int, patient: int, video: int,
                 frames: int | None = None) -> tuple[np.ndarray, dict]:
    """One sweep video uint8 [T, H, W] and its ground truth (s, plane, cardiac phase per frame)."""
    sc = video_scene(cfg, seed, patient, video, frames)
    fetus, style, s, phase, pose, ren = sc.fetus, sc.style, sc.s, sc.phase, sc.pose, sc.renderer
    n = s.shape[0]
    size = (cfg.image_size, cfg.image_size)
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
    for p, count in enumerate(cfg.video_counts()):
        for v in range(count):
            yield f"{patient_id(p)}_v{v:02d}", p, v
