"""Fetal thorax anatomy as a function of sweep position s (caudal 0 -> cranial 1) and cardiac phase.

Coordinates: the *thorax frame* has x towards the fetal left, y anterior, thorax radius 1.
Heart structures are written in a *heart frame* (u along the long axis from the crux to
the apex, v towards the left-ventricular side) so that the per-fetus heart axis (30-60
degrees to the left) and heart size apply to all of them at once; each fetus converts
its tables to the thorax frame once (``build_fetus``).

Every structure has keyframes in s; its parameters are interpolated linearly between
them, and its size factor ``vis`` grows from 0 where the slice first meets it, so planes
morph continuously and transitional frames are genuinely ambiguous. Rendering paints
tissue labels (painter's algorithm) on whatever grid of points the caller gives --
in practice the scanner's polar (depth, beam) grid, so no resampling is needed.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

CLASSES: tuple[str, ...] = ("4CH", "LVOT", "RVOT", "3VV", "3VT")
# Sweep position of each keyframe (caudal -> cranial). Planes are labelled within +-PLANE_HALF_WIDTH.
KEYFRAMES: dict[str, float] = {"ABD": 0.08, "4CH": 0.30, "LVOT": 0.42, "RVOT": 0.52,
                               "3VV": 0.64, "3VT": 0.76, "NECK": 0.95}
PLANE_HALF_WIDTH = 0.035

# Tissue labels; acoustic properties live in acoustics.TISSUES (same order).
FLUID, MAT_FAT, MAT_MUSCLE, SKIN, LUNG, LIVER, MYO, BLOOD, WALL, BONE, THYMUS, TRACHEA, SOFT, LEAFLET, PLACENTA = range(15)
TISSUE_NAMES = ("fluid", "maternal_fat", "maternal_muscle", "skin", "lung", "liver", "myocardium", "blood",
                "vessel_wall", "bone", "thymus", "trachea", "soft", "leaflet", "placenta")


def plane_of(s: np.ndarray | float) -> np.ndarray:
    """Label per sweep position: a class name within a plane's window, else 'transition'."""
    s = np.asarray(s, dtype=np.float64)
    out = np.full(s.shape, "transition", dtype=object)
    for name in CLASSES:
        out[np.abs(s - KEYFRAMES[name]) <= PLANE_HALF_WIDTH] = name
    return out


# ---------------------------------------------------------------- cardiac cycle
SYSTOLE = 0.38  # fraction of the cycle


def cardiac_factors(phase: np.ndarray) -> dict[str, np.ndarray]:
    """Ventricular and atrial size factors and AV-valve opening for cycle fraction phase in [0, 1)."""
    ph = np.mod(phase, 1.0)
    sys = np.where(ph < SYSTOLE, np.sin(np.pi * np.clip(ph / SYSTOLE, 0, 1)), 0.0)
    kick = np.where(ph > 0.82, np.sin(np.pi * np.clip((ph - 0.82) / 0.18, 0, 1)), 0.0)
    kv = 1.0 - 0.24 * sys + 0.04 * kick
    ka = 1.0 + 0.16 * sys - 0.18 * kick
    # AV valves open in diastole after isovolumic relaxation, close at the start of systole.
    t = np.clip((ph - (SYSTOLE + 0.04)) / 0.08, 0, 1) * np.clip((1.0 - ph) / 0.05, 0, 1)
    return {"kv": kv, "ka": ka, "open": t * t * (3 - 2 * t), "sys": sys}


# ---------------------------------------------------------------- structure tables
@dataclasses.dataclass
class Structure:
    """One anatomical primitive with keyframed parameters in the thorax frame."""
    name: str
    kind: str                 # ell [cx,cy,a,b,ang] | tube [x0,y0,x1,y1,x2,y2,r] | seg [x0,y0,x1,y1,r] | leaflet [hx,hy,a_closed,a_open,len]
    fill: int | None
    wall: int | None          # tissue of a wall ring (vessels, trachea), painted at wall_order
    order: int
    wall_order: int
    role: str | None          # cardiac modulation: vent | atr | heart | mitral | tricuspid | artery | band
    s: np.ndarray             # [K]
    params: np.ndarray        # [K, P] (last column = vis)
    wall_width: tuple[float, float] = (0.018, 0.12)  # wall ring: absolute + fraction of the radius


H_, T_ = "H", "T"


def _spec() -> list[dict[str, Any]]:
    """The anatomy atlas. Points are (frame, a, b); sizes in thorax radii; angles in degrees."""
    ABD, C4, LV_, RV_, V3, T3, NK = (KEYFRAMES[k] for k in ("ABD", "4CH", "LVOT", "RVOT", "3VV", "3VT", "NECK"))
    z = 0.0
    return [
        # body outline: skin then soft tissue; shrinks into the neck
        dict(name="skin", kind="ell", fill=SKIN, order=0, keys={
            0.0: ((T_, 0, 0.0), 1.025, 0.975, 0, 1), 0.5: ((T_, 0, 0), 1.025, 0.945, 0, 1),
            0.82: ((T_, 0, 0), 0.995, 0.925, 0, 1), NK: ((T_, 0, -0.05), 0.655, 0.595, 0, 1), 1.0: ((T_, 0, -0.05), 0.625, 0.575, 0, 1)}),
        dict(name="body", kind="ell", fill=SOFT, order=1, keys={
            0.0: ((T_, 0, 0.0), 1.0, 0.95, 0, 1), 0.5: ((T_, 0, 0), 1.0, 0.92, 0, 1),
            0.82: ((T_, 0, 0), 0.97, 0.9, 0, 1), NK: ((T_, 0, -0.05), 0.63, 0.57, 0, 1), 1.0: ((T_, 0, -0.05), 0.6, 0.55, 0, 1)}),
        # abdomen
        dict(name="liver", kind="ell", fill=LIVER, order=2, keys={
            0.0: ((T_, -0.08, 0.05), 0.86, 0.76, 10, 1), 0.12: ((T_, -0.1, 0.08), 0.84, 0.7, 10, 1), 0.22: ((T_, -0.2, 0.2), 0.5, 0.3, 10, 0)}),
        dict(name="stomach", kind="ell", fill=FLUID, order=3, keys={
            0.0: ((T_, 0.42, 0.08), 0.24, 0.15, 35, 1), ABD: ((T_, 0.42, 0.1), 0.22, 0.14, 35, 1), 0.16: ((T_, 0.45, 0.15), 0.12, 0.08, 35, 0)}),
        dict(name="umbilical_vein", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, keys={
            0.0: ((T_, -0.02, 0.85), (T_, -0.08, 0.45), (T_, -0.3, 0.2), 0.06, 1), ABD: ((T_, -0.02, 0.85), (T_, -0.08, 0.45), (T_, -0.3, 0.2), 0.055, 1),
            0.16: ((T_, -0.1, 0.5), (T_, -0.15, 0.4), (T_, -0.3, 0.2), 0.04, 0)}),
        dict(name="ivc", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, keys={
            0.0: ((T_, -0.16, -0.42),) * 3 + (0.065, 1), 0.2: ((T_, -0.18, -0.35),) * 3 + (0.07, 1),
            0.28: ((H_, -0.45, -0.2),) * 3 + (0.06, 0)}),
        # thorax
        dict(name="lungs", kind="ell", fill=LUNG, order=5, keys={
            0.14: ((T_, 0, -0.05), 0.85, 0.75, 0, 0), 0.22: ((T_, 0, -0.03), 0.86, 0.78, 0, 1),
            0.8: ((T_, 0, -0.05), 0.84, 0.74, 0, 1), 0.9: ((T_, 0, -0.1), 0.5, 0.4, 0, 0)}),
        dict(name="thymus", kind="ell", fill=THYMUS, order=6, keys={
            0.55: ((T_, 0, 0.55), 0.3, 0.15, 0, 0), V3: ((T_, 0.02, 0.56), 0.4, 0.2, 0, 1),
            T3: ((T_, 0.0, 0.55), 0.42, 0.2, 0, 1), 0.88: ((T_, 0, 0.5), 0.3, 0.15, 0, 0)}),
        dict(name="pericardium", kind="ell", fill=WALL, order=20, role="heart", keys={
            0.18: ((H_, -0.05, 0), 0.5, 0.4, 0, 0), 0.25: ((H_, 0, 0), 0.62, 0.5, 0, 1), C4: ((H_, 0, 0), 0.63, 0.51, 0, 1),
            LV_: ((H_, 0.02, -0.02), 0.6, 0.48, 0, 1), RV_: ((H_, 0.08, -0.12), 0.46, 0.38, 0, 1), 0.6: ((H_, 0.1, -0.2), 0.3, 0.25, 0, 0)}),
        dict(name="myocardium", kind="ell", fill=MYO, order=21, role="heart", keys={
            0.18: ((H_, -0.05, 0), 0.48, 0.38, 0, 0), 0.25: ((H_, 0, 0), 0.595, 0.475, 0, 1), C4: ((H_, 0, 0), 0.6, 0.48, 0, 1),
            LV_: ((H_, 0.02, -0.02), 0.57, 0.455, 0, 1), RV_: ((H_, 0.08, -0.12), 0.435, 0.355, 0, 1), 0.6: ((H_, 0.1, -0.2), 0.28, 0.23, 0, 0)}),
        dict(name="LV", kind="ell", fill=BLOOD, order=22, role="vent", keys={
            0.2: ((H_, 0.1, 0.16), 0.2, 0.08, 0, 0), C4: ((H_, 0.16, 0.19), 0.29, 0.15, 0, 1),
            LV_: ((H_, 0.15, 0.17), 0.3, 0.14, 0, 1), 0.5: ((H_, 0.2, 0.15), 0.15, 0.07, 0, 0)}),
        dict(name="RV", kind="ell", fill=BLOOD, order=22, role="vent", keys={
            0.2: ((H_, 0.1, -0.17), 0.18, 0.1, 0, 0), C4: ((H_, 0.1, -0.205), 0.26, 0.17, -4, 1),
            LV_: ((H_, 0.14, -0.21), 0.22, 0.11, -4, 1), RV_: ((H_, 0.1, -0.16), 0.27, 0.15, -10, 1), 0.6: ((H_, 0.1, -0.2), 0.12, 0.08, 0, 0)}),
        dict(name="LA", kind="ell", fill=BLOOD, order=22, role="atr", keys={
            0.2: ((H_, -0.3, 0.15), 0.1, 0.09, 0, 0), C4: ((H_, -0.33, 0.18), 0.17, 0.16, 0, 1),
            LV_: ((H_, -0.38, 0.22), 0.09, 0.08, 0, 1), 0.48: ((H_, -0.38, 0.22), 0.04, 0.04, 0, 0)}),
        dict(name="RA", kind="ell", fill=BLOOD, order=22, role="atr", keys={
            0.2: ((H_, -0.3, -0.18), 0.1, 0.1, 0, 0), C4: ((H_, -0.32, -0.2), 0.18, 0.17, 0, 1), 0.38: ((H_, -0.33, -0.2), 0.08, 0.08, 0, 0)}),
        dict(name="foramen_ovale", kind="ell", fill=BLOOD, order=23, role="atr", keys={
            0.25: ((H_, -0.34, -0.012), 0.0, 0.0, 0, 0), C4: ((H_, -0.35, -0.012), 0.05, 0.035, 0, 1), 0.35: ((H_, -0.35, -0.012), 0.0, 0.0, 0, 0)}),
        dict(name="moderator_band", kind="seg", fill=MYO, order=24, role="band", keys={
            0.24: ((H_, 0.26, -0.05), (H_, 0.26, -0.26), 0.0, 0), C4: ((H_, 0.3, -0.05), (H_, 0.27, -0.33), 0.016, 1),
            0.37: ((H_, 0.26, -0.05), (H_, 0.26, -0.26), 0.0, 0)}),
        dict(name="mitral_septal", kind="leaflet", fill=LEAFLET, order=32, role="mitral", keys={
            0.24: ((H_, -0.135, 0.05), 90, 8, 0.0, 0), C4: ((H_, -0.135, 0.045), 90, 8, 0.13, 1), 0.36: ((H_, -0.135, 0.05), 90, 8, 0.0, 0)}),
        dict(name="mitral_lateral", kind="leaflet", fill=LEAFLET, order=32, role="mitral", keys={
            0.24: ((H_, -0.135, 0.285), -90, -8, 0.0, 0), C4: ((H_, -0.135, 0.33), -90, -8, 0.13, 1), 0.36: ((H_, -0.135, 0.285), -90, -8, 0.0, 0)}),
        dict(name="tricuspid_septal", kind="leaflet", fill=LEAFLET, order=32, role="tricuspid", keys={
            0.24: ((H_, -0.09, -0.03), -90, -8, 0.0, 0), C4: ((H_, -0.09, -0.028), -90, -8, 0.12, 1), 0.36: ((H_, -0.09, -0.03), -90, -8, 0.0, 0)}),
        dict(name="tricuspid_lateral", kind="leaflet", fill=LEAFLET, order=32, role="tricuspid", keys={
            0.24: ((H_, -0.12, -0.33), 90, 8, 0.0, 0), C4: ((H_, -0.12, -0.37), 90, 8, 0.14, 1), 0.36: ((H_, -0.12, -0.33), 90, 8, 0.0, 0)}),
        # great vessels: one tube each whose control points morph (tube -> cross-section -> arch)
        dict(name="desc_aorta", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, role="artery", keys={
            0.0: ((T_, 0.09, -0.55),) * 3 + (0.055, 1), C4: ((T_, 0.13, -0.46),) * 3 + (0.065, 1),
            T3: ((T_, 0.13, -0.45),) * 3 + (0.065, 1), 0.86: ((T_, 0.12, -0.42),) * 3 + (0.06, 1), 0.92: ((T_, 0.1, -0.4),) * 3 + (0.0, 0)}),
        dict(name="aorta", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, role="artery", keys={
            0.35: ((H_, -0.1, 0.05),) * 3 + (0.0, 0),
            LV_: ((H_, -0.08, 0.07), (H_, -0.22, -0.22), (H_, -0.3, -0.62), 0.1, 1),
            0.47: ((H_, -0.16, -0.1), (H_, -0.2, -0.22), (H_, -0.22, -0.35), 0.08, 1),
            RV_: ((T_, -0.1, 0.0),) * 3 + (0.09, 1), V3: ((T_, 0.03, 0.1),) * 3 + (0.105, 1),
            T3: ((T_, 0.0, 0.32), (T_, -0.02, -0.1), (T_, 0.13, -0.44), 0.09, 1),
            0.88: ((T_, 0.0, 0.1), (T_, 0.0, -0.1), (T_, 0.1, -0.3), 0.03, 0)}),
        dict(name="pulmonary_artery", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, role="artery", keys={
            0.45: ((H_, 0.0, -0.15),) * 3 + (0.0, 0),
            RV_: ((H_, 0.0, -0.14), (T_, 0.17, 0.02), (T_, 0.17, -0.34), 0.1, 1),
            V3: ((T_, 0.3, 0.27), (T_, 0.295, 0.25), (T_, 0.29, 0.23), 0.135, 1),
            T3: ((T_, 0.34, 0.34), (T_, 0.27, -0.03), (T_, 0.13, -0.44), 0.1, 1),
            0.86: ((T_, 0.25, 0.2), (T_, 0.2, 0.0), (T_, 0.13, -0.3), 0.0, 0)}),
        dict(name="right_pa", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, role="artery", keys={
            0.47: ((T_, 0.15, -0.12),) * 3 + (0.0, 0),
            RV_: ((T_, 0.15, -0.14), (T_, -0.05, -0.2), (T_, -0.32, -0.18), 0.05, 1),
            0.58: ((T_, 0.15, -0.12),) * 3 + (0.0, 0)}),
        dict(name="svc", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, keys={
            0.44: ((T_, -0.3, 0.0),) * 3 + (0.0, 0), RV_: ((T_, -0.32, -0.02),) * 3 + (0.055, 1),
            V3: ((T_, -0.23, -0.07),) * 3 + (0.08, 1), T3: ((T_, -0.3, 0.05),) * 3 + (0.055, 1), 0.9: ((T_, -0.3, 0.05),) * 3 + (0.0, 0)}),
        dict(name="trachea", kind="tube", fill=FLUID, wall=TRACHEA, order=41, wall_order=40, wall_width=(0.03, 0.35), keys={
            0.56: ((T_, -0.07, -0.24),) * 3 + (0.0, 0), V3: ((T_, -0.07, -0.24),) * 3 + (0.06, 1),
            T3: ((T_, -0.13, -0.21),) * 3 + (0.065, 1), NK: ((T_, 0.0, 0.08),) * 3 + (0.075, 1), 1.0: ((T_, 0.0, 0.1),) * 3 + (0.075, 1)}),
        dict(name="carotid_l", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, role="artery", keys={
            0.82: ((T_, 0.18, 0.0),) * 3 + (0.0, 0), NK: ((T_, 0.24, -0.02),) * 3 + (0.05, 1), 1.0: ((T_, 0.24, -0.02),) * 3 + (0.05, 1)}),
        dict(name="carotid_r", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, role="artery", keys={
            0.82: ((T_, -0.18, 0.0),) * 3 + (0.0, 0), NK: ((T_, -0.24, -0.02),) * 3 + (0.05, 1), 1.0: ((T_, -0.24, -0.02),) * 3 + (0.05, 1)}),
        dict(name="jugular_l", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, keys={
            0.84: ((T_, 0.3, 0.05),) * 3 + (0.0, 0), NK: ((T_, 0.36, 0.04),) * 3 + (0.06, 1), 1.0: ((T_, 0.36, 0.04),) * 3 + (0.06, 1)}),
        dict(name="jugular_r", kind="tube", fill=BLOOD, wall=WALL, order=30, wall_order=10, keys={
            0.84: ((T_, -0.3, 0.05),) * 3 + (0.0, 0), NK: ((T_, -0.36, 0.04),) * 3 + (0.06, 1), 1.0: ((T_, -0.36, 0.04),) * 3 + (0.06, 1)}),
        # skeleton: vertebral body + two neural-arch ossification centres, ribs
        dict(name="vertebral_body", kind="ell", fill=BONE, order=50, keys={
            0.0: ((T_, 0, -0.7), 0.085, 0.065, 0, 1), 0.82: ((T_, 0, -0.68), 0.085, 0.065, 0, 1),
            NK: ((T_, 0, -0.36), 0.07, 0.055, 0, 1), 1.0: ((T_, 0, -0.33), 0.07, 0.055, 0, 1)}),
        dict(name="lamina_l", kind="seg", fill=BONE, order=50, keys={
            0.0: ((T_, 0.085, -0.8), (T_, 0.05, -0.9), 0.025, 1), 0.82: ((T_, 0.085, -0.78), (T_, 0.05, -0.88), 0.025, 1),
            NK: ((T_, 0.07, -0.45), (T_, 0.04, -0.53), 0.022, 1), 1.0: ((T_, 0.07, -0.42), (T_, 0.04, -0.5), 0.022, 1)}),
        dict(name="lamina_r", kind="seg", fill=BONE, order=50, keys={
            0.0: ((T_, -0.085, -0.8), (T_, -0.05, -0.9), 0.025, 1), 0.82: ((T_, -0.085, -0.78), (T_, -0.05, -0.88), 0.025, 1),
            NK: ((T_, -0.07, -0.45), (T_, -0.04, -0.53), 0.022, 1), 1.0: ((T_, -0.07, -0.42), (T_, -0.04, -0.5), 0.022, 1)}),
        dict(name="rib_l", kind="tube", fill=BONE, order=51, keys={
            0.04: ((T_, 0.35, -0.82), (T_, 0.9, -0.55), (T_, 0.98, 0.05), 0.0, 0),
            0.12: ((T_, 0.3, -0.85), (T_, 0.92, -0.6), (T_, 0.97, 0.2), 0.018, 1),
            0.8: ((T_, 0.3, -0.83), (T_, 0.9, -0.6), (T_, 0.95, 0.15), 0.018, 1), 0.88: ((T_, 0.3, -0.8), (T_, 0.8, -0.5), (T_, 0.85, 0.1), 0.0, 0)}),
        dict(name="rib_r", kind="tube", fill=BONE, order=51, keys={
            0.04: ((T_, -0.35, -0.82), (T_, -0.9, -0.55), (T_, -0.98, 0.05), 0.0, 0),
            0.12: ((T_, -0.3, -0.85), (T_, -0.92, -0.6), (T_, -0.97, 0.2), 0.018, 1),
            0.8: ((T_, -0.3, -0.83), (T_, -0.9, -0.6), (T_, -0.95, 0.15), 0.018, 1), 0.88: ((T_, -0.3, -0.8), (T_, -0.8, -0.5), (T_, -0.85, 0.1), 0.0, 0)}),
    ]


# ---------------------------------------------------------------- per fetus
@dataclasses.dataclass
class Fetus:
    """One patient's anatomy: structure tables in the thorax frame, heart geometry, heart rate."""
    structures: list[Structure]
    crux: np.ndarray          # [2] thorax frame
    heart_rate_bpm: float
    plane_offset: float       # small per-fetus shift of where planes sit along s
    params: dict[str, float]


SIZE_GROUPS = {"LV": "lv", "RV": "rv", "LA": "la", "RA": "ra", "aorta": "ao", "pulmonary_artery": "pa",
               "svc": "svc", "desc_aorta": "dao", "trachea": "tr", "stomach": "st", "thymus": "thy"}


def sample_fetus(rng: np.random.Generator, variation: float = 1.0) -> Fetus:
    """Draw one fetus: heart axis 30-60 deg, heart size/position, chamber and vessel sizes, heart rate."""
    v = variation
    p = dict(
        axis_deg=float(rng.uniform(45 - 15 * v, 45 + 15 * v)),
        heart_scale=float(1.1 + v * rng.uniform(-0.1, 0.1)),
        heart_x=float(0.1 + v * rng.uniform(-0.05, 0.05)),
        heart_y=float(0.12 + v * rng.uniform(-0.05, 0.05)),
        body_aspect=float(1.0 + v * rng.uniform(-0.06, 0.06)),
        heart_rate=float(rng.uniform(120, 160)),
        plane_offset=float(v * rng.uniform(-0.008, 0.008)),
    )
    for g in SIZE_GROUPS.values():
        p["size_" + g] = float(1.0 + v * rng.uniform(-0.12, 0.12))
    return build_fetus(p)


def build_fetus(p: dict[str, float]) -> Fetus:
    a = math.radians(p["axis_deg"])
    d = np.array([math.sin(a), math.cos(a)])          # crux -> apex, towards left-anterior
    n = np.array([math.cos(a), -math.sin(a)])         # towards the LV side (left-posterior)
    c = np.array([p["heart_x"], p["heart_y"]])
    h = p["heart_scale"]

    def pt(q):
        frame, x, y = q
        if frame == H_:
            return c + h * (x * d + y * n)
        return np.array([x, y], dtype=np.float64)

    def ang(deg):  # heart-frame angle -> thorax-frame angle (degrees)
        t = math.radians(deg)
        w = math.cos(t) * d + math.sin(t) * n
        return math.degrees(math.atan2(w[1], w[0]))

    structures = []
    for spec in _spec():
        kind = spec["kind"]
        grp = SIZE_GROUPS.get(spec["name"])
        k = p.get("size_" + grp, 1.0) if grp else 1.0
        keys = sorted(spec["keys"].items())
        rows = []
        for s, prm in keys:
            if kind == "ell":
                (q, ax, bx, an, vis) = prm
                frame = q[0]
                sc = (h if frame == H_ else 1.0) * k
                ctr = pt(q)
                an_t = ang(an) if frame == H_ else an
                if spec["name"] in ("skin", "body"):
                    ax, bx = ax * p["body_aspect"], bx / p["body_aspect"]
                rows.append([ctr[0], ctr[1], ax * sc, bx * sc, math.radians(an_t), vis])
            elif kind == "tube":
                q0, q1, q2, r, vis = prm
                sc = (h if q0[0] == H_ else 1.0) * k
                rows.append([*pt(q0), *pt(q1), *pt(q2), r * sc, vis])
            elif kind == "seg":
                q0, q1, r, vis = prm
                sc = h if q0[0] == H_ else 1.0
                rows.append([*pt(q0), *pt(q1), r * sc, vis])
            elif kind == "leaflet":
                q, a_closed, a_open, length, vis = prm
                ac, ao = math.radians(ang(a_closed)), math.radians(ang(a_open))
                if ao - ac > math.pi:
                    ao -= 2 * math.pi
                elif ac - ao > math.pi:
                    ao += 2 * math.pi
                rows.append([*pt(q), ac, ao, length * h, vis])
        s_arr = np.array([s for s, _ in keys]) + p["plane_offset"] * (np.array([s for s, _ in keys]) > 0.2)
        structures.append(Structure(spec["name"], kind, spec.get("fill"), spec.get("wall"), spec["order"],
                                    spec.get("wall_order", spec["order"]), spec.get("role"), s_arr,
                                    np.array(rows, dtype=np.float64), spec.get("wall_width", (0.018, 0.12))))
    crux = c + h * (-0.13 * d)
    return Fetus(structures, crux, p["heart_rate"], p["plane_offset"], p)


# ---------------------------------------------------------------- per frame
def frame_params(st: Structure, s: np.ndarray) -> np.ndarray:
    """Interpolate a structure's keyframes at sweep positions s [T] -> [T, P]; vis = 0 outside its range."""
    out = np.empty((s.shape[0], st.params.shape[1]))
    for j in range(st.params.shape[1] - 1):
        out[:, j] = np.interp(s, st.s, st.params[:, j])
    out[:, -1] = np.interp(s, st.s, st.params[:, -1], left=0.0, right=0.0)
    return out


def _about(pts_x, pts_y, crux, k):
    return crux[0] + (pts_x - crux[0]) * k, crux[1] + (pts_y - crux[1]) * k


def apply_cardiac(st: Structure, prm: np.ndarray, cf: dict[str, np.ndarray], crux: np.ndarray) -> np.ndarray:
    """Modulate [T, P] params by the cardiac cycle (chambers about the crux, valves, arterial pulse)."""
    prm = prm.copy()
    role = st.role
    if role is None:
        return prm
    if role in ("vent", "atr", "heart"):
        k = {"vent": cf["kv"], "atr": cf["ka"], "heart": 1.0 - 0.3 * (1.0 - cf["kv"])}[role]
        prm[:, 0], prm[:, 1] = _about(prm[:, 0], prm[:, 1], crux, k)
        prm[:, 2] *= k
        prm[:, 3] *= 0.4 + 0.6 * k
    elif role in ("mitral", "tricuspid"):
        prm[:, 0], prm[:, 1] = _about(prm[:, 0], prm[:, 1], crux, 0.7 + 0.3 * cf["kv"])
        o = cf["open"]
        prm[:, 2] = prm[:, 2] + o * (prm[:, 3] - prm[:, 2])
    elif role == "band":
        for j in (0, 2):
            prm[:, j], prm[:, j + 1] = _about(prm[:, j], prm[:, j + 1], crux, cf["kv"])
    elif role == "artery":
        prm[:, -2] *= 1.0 + 0.06 * cf["sys"]
    return prm


def _seg_d2(X, Y, x0, y0, x1, y1):
    ex, ey = x1 - x0, y1 - y0
    den = ex * ex + ey * ey + 1e-12
    px, py = X - x0, Y - y0
    t = np.clip((px * ex + py * ey) / den, 0.0, 1.0)
    qx, qy = px - t * ex, py - t * ey
    return qx * qx + qy * qy


def _b(v: np.ndarray) -> np.ndarray:
    return v[:, None, None].astype(np.float32)


def _bounds(st: Structure, which: str, prm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A circle (cx, cy, R) [T] in the thorax frame that contains the structure's mask in every frame."""
    vis = prm[:, -1]
    if st.kind == "ell":
        return prm[:, 0], prm[:, 1], np.maximum(prm[:, 2], prm[:, 3]) * vis + 1e-3
    if st.kind == "leaflet":
        return prm[:, 0], prm[:, 1], (prm[:, 4] + 0.018) * vis + 1e-3
    if st.kind == "seg":
        cx, cy = 0.5 * (prm[:, 0] + prm[:, 2]), 0.5 * (prm[:, 1] + prm[:, 3])
        half = 0.5 * np.hypot(prm[:, 2] - prm[:, 0], prm[:, 3] - prm[:, 1])
        return cx, cy, half + prm[:, 4] * vis + 1e-3
    # tube: both capsules lie in the hull of (p0, mid, p2); the wall ring is the widest pass
    x0, y0, x1, y1, x2, y2 = (prm[:, j] for j in range(6))
    mx, my = 0.25 * x0 + 0.5 * x1 + 0.25 * x2, 0.25 * y0 + 0.5 * y1 + 0.25 * y2
    cx, cy = (x0 + mx + x2) / 3, (y0 + my + y2) / 3
    ext = np.max([np.hypot(x0 - cx, y0 - cy), np.hypot(mx - cx, my - cy), np.hypot(x2 - cx, y2 - cy)], axis=0)
    r = prm[:, 6] * vis
    return cx, cy, ext + r + st.wall_width[0] + st.wall_width[1] * r + 1e-3


def render_labels(fetus: Fetus, s: np.ndarray, phase: np.ndarray, X: np.ndarray, Y: np.ndarray,
                  labels: np.ndarray, locate=None) -> None:
    """Paint tissue labels in place on points (X, Y) [T, ...] in the thorax frame.

    labels is pre-filled with the background (maternal wall, fluid, uterus); structures are
    painted in order, vessel walls before the heart and lumens after it so that outflow
    tracts open into their ventricles.

    locate (optional): (cx, cy, R) thorax-frame circles [T] -> (slice, slice) of the last two
    axes of X that holds every point inside them in every frame; each structure is then
    evaluated on that box only (same labels, a fraction of the work).
    """
    cf = cardiac_factors(phase)
    passes: list[tuple[int, int, str, np.ndarray]] = []
    for i, st in enumerate(fetus.structures):
        prm = frame_params(st, s)
        vis = prm[:, -1]
        if not np.any(vis > 0.02):
            continue
        prm = apply_cardiac(st, prm, cf, fetus.crux)
        if st.fill is not None:
            passes.append((st.order, i, "fill", prm))
        if st.wall is not None:
            passes.append((st.wall_order, i, "wall", prm))
    passes.sort(key=lambda t: (t[0], t[1]))
    cache: dict[int, tuple[np.ndarray, tuple[slice, slice]]] = {}
    full = (slice(None), slice(None))
    for _, i, which, prm in passes:
        st = fetus.structures[i]
        vis = prm[:, -1]
        if i in cache:
            d2, box = cache.pop(i)
        else:
            d2, box = None, full
            if locate is not None:
                box = locate(*_bounds(st, which, prm))
                if box[0].stop <= box[0].start or box[1].stop <= box[1].start:
                    continue
        Xb, Yb = X[(Ellipsis, *box)], Y[(Ellipsis, *box)]
        if st.kind == "ell":
            cx, cy, a, b, an = (_b(prm[:, j]) for j in range(5))
            a, b = a * _b(vis) + 1e-6, b * _b(vis) + 1e-6
            c, sn = np.cos(an), np.sin(an)
            dx, dy = Xb - cx, Yb - cy
            u = (dx * c + dy * sn) / a
            w = (dy * c - dx * sn) / b
            mask = u * u + w * w < 1.0
        elif st.kind == "leaflet":
            hx, hy, an, _, ln = (_b(prm[:, j]) for j in range(5))
            ln = ln * _b(vis)
            x1, y1 = hx + ln * np.cos(an), hy + ln * np.sin(an)
            mask = _seg_d2(Xb, Yb, hx, hy, x1, y1) < (0.018 * _b(vis)) ** 2
        elif st.kind == "seg":
            x0, y0, x1, y1, r = (_b(prm[:, j]) for j in range(5))
            mask = _seg_d2(Xb, Yb, x0, y0, x1, y1) < (r * _b(vis)) ** 2
        else:  # tube: quadratic Bezier approximated by two capsules
            if d2 is None:
                x0, y0, x1, y1, x2, y2 = (prm[:, j] for j in range(6))
                mx, my = 0.25 * x0 + 0.5 * x1 + 0.25 * x2, 0.25 * y0 + 0.5 * y1 + 0.25 * y2
                d2 = np.minimum(_seg_d2(Xb, Yb, _b(x0), _b(y0), _b(mx), _b(my)),
                                _seg_d2(Xb, Yb, _b(mx), _b(my), _b(x2), _b(y2)))
                if st.wall is not None and st.fill is not None:
                    cache[i] = (d2, box)
            r = _b(prm[:, 6] * vis)
            if which == "wall":
                mask = d2 < (r + st.wall_width[0] + st.wall_width[1] * r) ** 2 * (r > 0.004)
            else:
                mask = d2 < r * r
        np.copyto(labels[(Ellipsis, *box)], st.wall if which == "wall" else st.fill, where=mask)
