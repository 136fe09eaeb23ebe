"""Cheap host-side augmentation: random rotation, random resized crop and horizontal flip (PIL, uint8);
and ``to_size``, the plain resize of evaluation images to the network's input size."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator,
                        scale=(0.2, 1.0), ratio=(0.75, 1.3333), attempts: int = 10) -> np.ndarray:
    """torchvision's RandomResizedCrop sampling on a uint8 [H, W] image -> [size, size]."""
    h, w = img.shape
    area = h * w
    box = None
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        log_r = rng.uniform(math.log(ratio[0]), math.log(ratio[1]))
        r = math.exp(log_r)
        cw = int(round(math.sqrt(target * r)))
        ch = int(round(math.sqrt(target / r)))
        if 0 < cw <= w and 0 < ch <= h:
            y0 = int(rng.integers(0, h - ch + 1))
            x0 = int(rng.integers(0, w - cw + 1))
            box = (x0, y0, x0 + cw, y0 + ch)
            break
    if box is None:  # central crop fallback, as torchvision
        s = min(h, w)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return resize(img, size, box)


def resize(img: np.ndarray, size: int, box=None) -> np.ndarray:
    if box is None and img.shape == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR, box=box))


def maybe_flip(img: np.ndarray, rng: np.random.Generator, enabled: bool = True) -> np.ndarray:
    return img[:, ::-1] if enabled and rng.random() < 0.5 else img


def maybe_rotate(img: np.ndarray, rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """Rotates about the centre by an angle uniform in [-max_degrees, max_degrees]; corners filled with 0.

    In fetal echo the thorax lies at any angle in the sector (the probe and the fetus both turn), so
    rotation is a nuisance the encoder should ignore. 0 disables it and draws no random number,
    which keeps the random stream (and so every crop) of runs without rotation unchanged.
    """
    if max_degrees <= 0:
        return img
    angle = float(rng.uniform(-max_degrees, max_degrees))
    return np.asarray(Image.fromarray(img).rotate(angle, resample=Image.BILINEAR, fillcolor=0))


def to_size(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, h, w] -> [N, size, size] (the store's resolution may differ from the network's)."""
    if images.shape[1:] == (size, size):
        return images
    return np.stack([resize(im, size) for im in images]) if len(images) else np.zeros((0, size, size), np.uint8)
