"""Ultrasound fan detection: where the image lives, as opposed to burned-in text and UI.

Inside the fan, speckle and anatomy change from frame to frame; text, rulers, logos
and the black surround do not. So the fan is the largest region of temporal
variance, filled to its convex hull (a sector is convex, and the hull also fills
dark, quiet blood pools). A single still, or a frozen clip, falls back to the
largest bright region. Work is done on a copy downsampled to <= 320 px.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

MAX_SIDE = 320


@dataclasses.dataclass(frozen=True)
class Fan:
    """bbox = (y0, y1, x0, x1) in source pixels; mask is bool over the bbox (None = keep all)."""

    bbox: tuple[int, int, int, int]
    mask: np.ndarray | None
    method: str

    def describe(self) -> dict:
        area = float(self.mask.mean()) if self.mask is not None else 1.0
        return {"bbox": [int(v) for v in self.bbox], "method": self.method, "fill": round(area, 4)}


def full_frame(h: int, w: int) -> Fan:
    return Fan((0, h, 0, w), None, "none")


def _downsample(frames: list[np.ndarray]) -> tuple[np.ndarray, int]:
    h, w = frames[0].shape
    f = max(1, int(np.ceil(max(h, w) / MAX_SIDE)))
    stack = np.stack([fr[::f, ::f] for fr in frames]).astype(np.float32)
    return stack, f


def _largest_component(active: np.ndarray, min_fill: float) -> np.ndarray | None:
    active = ndimage.binary_opening(active, structure=np.ones((3, 3), bool))
    lab, n = ndimage.label(active)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    k = int(np.argmax(sizes)) + 1
    if sizes[k - 1] < min_fill * active.size:
        return None
    return lab == k


def _hull_fill(comp: np.ndarray) -> np.ndarray:
    """Convex hull of a component, rasterised (qhull over its boundary pixels)."""
    from scipy.spatial import ConvexHull, QhullError
    edge = comp & ~ndimage.binary_erosion(comp)
    pts = np.argwhere(edge).astype(np.float64)
    try:
        hull = ConvexHull(pts)
    except (QhullError, ValueError):
        return comp
    ys, xs = np.nonzero(comp)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    gy, gx = np.mgrid[y0:y1, x0:x1]
    inside = np.ones(gy.shape, bool)
    for a, b, c in hull.equations:
        inside &= a * gy + b * gx + c <= 0.5
    out = np.zeros_like(comp)
    out[y0:y1, x0:x1] = inside
    return out | comp


def _to_fan(region: np.ndarray, f: int, h: int, w: int, method: str, dilate: int = 2) -> Fan:
    region = ndimage.binary_dilation(region, iterations=dilate)
    full = np.repeat(np.repeat(region, f, axis=0), f, axis=1)[:h, :w]
    ys, xs = np.nonzero(full)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    mask = full[y0:y1, x0:x1]
    return Fan((y0, y1, x0, x1), None if mask.all() else mask.copy(), method)


def detect_fan(frames: list[np.ndarray], min_fill: float = 0.02, var_threshold: float = 1.0,
               intensity_threshold: int = 8) -> Fan:
    """Fan from a sample of frames (uint8 [H, W]).

    Moving pixels locate the fan; but speckle over still tissue is coherent in time,
    so the fan is the bright-or-moving connected region that holds the motion, not
    the motion alone. Static text separated from it by black is left out.
    """
    h, w = frames[0].shape
    stack, f = _downsample(frames)
    if len(frames) >= 3:
        std = stack.std(axis=0)
        hi = float(np.percentile(std, 99))
        if hi > var_threshold:
            moving = std > max(var_threshold, 0.03 * hi)
            comp = _largest_component(moving, min_fill / 4)
            if comp is not None:
                region = ndimage.binary_opening(moving | (stack.max(axis=0) > intensity_threshold),
                                                structure=np.ones((3, 3), bool))
                lab, _ = ndimage.label(region)
                hits = np.bincount(lab[comp], minlength=lab.max() + 1)
                hits[0] = 0
                region = lab == int(np.argmax(hits))
                if region.mean() >= min_fill:
                    return _to_fan(_hull_fill(region | comp), f, h, w, "variance")
    return _intensity_fan(stack.max(axis=0), f, h, w, min_fill, intensity_threshold)


def detect_still_fan(img: np.ndarray, min_fill: float = 0.02, intensity_threshold: int = 8) -> Fan:
    """Fan of a single image: the largest non-dark region."""
    stack, f = _downsample([img])
    h, w = img.shape
    return _intensity_fan(stack[0], f, h, w, min_fill, intensity_threshold)


def _intensity_fan(img: np.ndarray, f: int, h: int, w: int, min_fill: float, thr: int) -> Fan:
    comp = _largest_component(img > thr, min_fill)
    if comp is None:
        return full_frame(h, w)
    return _to_fan(_hull_fill(comp), f, h, w, "intensity")
