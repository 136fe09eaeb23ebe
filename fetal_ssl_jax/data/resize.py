"""Crop to the fan, resize keeping the aspect ratio, pad to a square, blank outside the fan.

The geometry is planned once per clip (``Layout``) and applied per frame; the fan
mask is resized once into output space, so blanking costs one multiply on the small
output instead of one on every full-size source frame.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from fetal_ssl_jax.data.fan import Fan


@dataclasses.dataclass(frozen=True)
class Layout:
    size: int
    box: tuple[int, int, int, int]     # PIL crop box (x0, y0, x1, y1) in source pixels
    resized: tuple[int, int]           # (w, h) of the image before padding
    offset: tuple[int, int]            # (x, y) of the resized image in the padded square
    mask: np.ndarray | None            # uint8 0/1 [size, size], None = nothing to blank
    lut: np.ndarray | None = None      # value map applied to the output (e.g. limited -> full range)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        im = Image.fromarray(np.ascontiguousarray(frame))
        w, h = self.resized
        r = np.asarray(im.resize((w, h), Image.BILINEAR, box=self.box))
        if self.lut is not None:
            r = self.lut[r]
        out = np.zeros((self.size, self.size), np.uint8)
        x, y = self.offset
        out[y:y + h, x:x + w] = r
        if self.mask is not None:
            out *= self.mask
        return out


def plan(fan: Fan, size: int, lut: np.ndarray | None = None,
         scale: tuple[float, float] | None = None) -> Layout:
    """Fit the fan's box into size x size; or, with ``scale`` = (output px per source px down, across),
    resample at that scale, cropping what does not fit (centred across, from the top down: the probe)."""
    y0, y1, x0, x1 = fan.bbox
    bh, bw = y1 - y0, x1 - x0
    fmask = fan.mask
    if scale is None:
        sy = sx = size / max(bh, bw)
    else:
        sy, sx = scale
        ch, cw = min(bh, max(1, int(size / sy))), min(bw, max(1, int(size / sx)))
        cx = x0 + (bw - cw) // 2
        if fmask is not None:
            fmask = fmask[:ch, cx - x0:cx - x0 + cw]
        y1, x0, x1, bh, bw = y0 + ch, cx, cx + cw, ch, cw
    w, h = max(1, min(size, round(bw * sx))), max(1, min(size, round(bh * sy)))
    ox, oy = (size - w) // 2, (size - h) // 2
    mask = None
    if fmask is not None:
        m = Image.fromarray(fmask.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)
        mask = np.zeros((size, size), np.uint8)
        mask[oy:oy + h, ox:ox + w] = np.asarray(m) >= 128
    return Layout(size, (x0, y0, x1, y1), (w, h), (ox, oy), mask, lut)
