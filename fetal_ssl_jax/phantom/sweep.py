"""Probe motion: sweep position s(t), cardiac phase, in-plane pose with tremor and fetal movement.

A sonographer sweeps from the upper abdomen towards the neck at an uneven speed, pauses on
the planes she wants, goes back and forth over them, and the fetus occasionally moves.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fetal_ssl_jax.phantom import anatomy as A
from fetal_ssl_jax.phantom.scanner import Pose


def _smooth_noise(rng: np.random.Generator, n: int, scale: float, corr: int) -> np.ndarray:
    """Band-limited noise: white noise smoothed over ~corr frames, unit-ish std times scale."""
    k = max(1, corr)
    w = rng.standard_normal(n + 4 * k)
    ker = np.exp(-0.5 * (np.arange(-2 * k, 2 * k + 1) / k) ** 2)
    y = np.convolve(w, ker / np.sqrt(np.sum(ker ** 2)), mode="valid")[:n]
    return scale * y


def sweep_positions(rng: np.random.Generator, n: int, path: Any = None) -> np.ndarray:
    """s(t) [n]: waypoints with reversals and pauses on planes, eased in between.

    path: the stream of the sweep's start, end and direction (default rng; synthesis.SharedDraws to
    share them with the patient's other videos); overshoots, pauses, speeds and jitter come from rng.
    """
    path = rng if path is None else path
    planes = [A.KEYFRAMES[c] for c in A.CLASSES]
    start, end = path.uniform(0.0, 0.2), path.uniform(0.82, 1.0)
    if path.random() < 0.25:
        start, end = end, start  # some sonographers sweep cranial -> caudal
    pts = [start]
    durs: list[float] = []
    pos = start
    targets = sorted(planes, reverse=start > end)
    for tgt in targets + [end]:
        # overshoot and come back sometimes
        if rng.random() < 0.3 and tgt != end:
            over = tgt + np.sign(end - start) * rng.uniform(0.03, 0.08)
            pts.append(over)
            durs.append(abs(over - pos) / rng.uniform(0.5, 1.5))
            pos = over
        pts.append(tgt + rng.normal(0, 0.01))
        durs.append(abs(pts[-1] - pos) / rng.uniform(0.5, 1.5))
        pos = pts[-1]
        if rng.random() < 0.5 and tgt != end:  # pause on the plane
            pts.append(pos + rng.normal(0, 0.004))
            durs.append(rng.uniform(0.03, 0.12))
            pos = pts[-1]
    durs_arr = np.asarray(durs) + 1e-3
    times = np.concatenate([[0.0], np.cumsum(durs_arr)]) / np.sum(durs_arr) * (n - 1)
    t = np.arange(n, dtype=np.float64)
    seg = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(pts) - 2)
    u = (t - times[seg]) / np.maximum(times[seg + 1] - times[seg], 1e-9)
    u = u * u * (3 - 2 * u)
    p = np.asarray(pts)
    s = p[seg] + (p[seg + 1] - p[seg]) * u
    s += _smooth_noise(rng, n, 0.004, 3)
    return np.clip(s, 0.0, 1.0)


def cardiac_phase(rng: np.random.Generator, n: int, fps: float, bpm: float) -> np.ndarray:
    """Cycle fraction per frame, with slight beat-to-beat variation of the rate."""
    rate = bpm / 60.0 / fps * (1.0 + _smooth_noise(rng, n, 0.03, 10))
    return np.mod(rng.uniform() + np.cumsum(rate), 1.0)


def base_pose(rng: Any, rotation_deg: float = 180.0) -> dict[str, float]:
    """Where the fetus lies in the fan for one video/exam: size (gestational age and zoom), place, angle.

    rng: a numpy Generator, or synthesis.SharedDraws (a pose shared, to a degree, by a patient's videos).
    """
    radius = rng.uniform(0.36, 0.48)  # zoomed on the thorax, as guidelines ask for the heart views
    top = max(0.42, radius + 0.1)
    return dict(
        radius=radius,
        cz=rng.uniform(top, top + 0.1),
        cx=rng.uniform(-0.12, 0.12),
        angle=np.deg2rad(rng.uniform(-rotation_deg, rotation_deg)),
        mirror=1.0 if rng.random() < 0.5 else -1.0,
    )


def video_pose(rng: np.random.Generator, n: int, base: dict[str, float], movement: float = 1.0) -> Pose:
    """Per-frame pose: hand tremor, slow drift, and (sometimes) a fetal movement that turns the body."""
    ang = base["angle"] + _smooth_noise(rng, n, 0.04 * movement, 6)
    if rng.random() < 0.3 * movement and n > 8:
        t0 = int(rng.integers(0, n))
        k = np.clip((np.arange(n) - t0) / max(2, int(rng.integers(3, 10))), 0, 1)
        ang = ang + rng.uniform(-0.8, 0.8) * k
    return Pose(
        cx=base["cx"] + _smooth_noise(rng, n, 0.01 * movement, 8),
        cz=base["cz"] + _smooth_noise(rng, n, 0.008 * movement, 8),
        radius=base["radius"] * (1 + _smooth_noise(rng, n, 0.01 * movement, 12)),
        angle=ang,
        mirror=np.full(n, base["mirror"]),
    )


SPINE_CLEAR_DEG = 30.0


def still_poses(rng: np.random.Generator, n: int, rotation_deg: float = 180.0,
                spine_clear_deg: float = SPINE_CLEAR_DEG) -> Pose:
    """Independent poses for n stills (each a different moment of the exam).

    A sonographer does not save a standard plane with the spine between the probe and the
    heart (its shadow hides the heart): the spine stays at least spine_clear_deg away from
    12 o'clock (angle 0). Sweeps (videos) keep every orientation.
    """
    ps = [base_pose(rng, rotation_deg) for _ in range(n)]
    if rotation_deg > spine_clear_deg > 0:
        rot = np.deg2rad(rotation_deg)
        clear = np.deg2rad(spine_clear_deg)
        for p in ps:  # [-rot, rot] -> +-[clear, rot], order preserving, no extra random draws
            a = p["angle"]
            p["angle"] = float(np.sign(a) * (clear + abs(a) * (rot - clear) / rot))
    return Pose(*(np.array([p[k] for p in ps]) for k in ("cx", "cz", "radius", "angle", "mirror")))
