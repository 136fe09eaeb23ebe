"""Cheap host-side augmentation: random rotation and resized crop (one affine resampling), horizontal flip
(PIL, uint8);
and ``to_size``, the plain resize of evaluation images to the network's input size."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image


def crop_box(shape: tuple[int, int], rng: np.random.Generator, scale=(0.2, 1.0), ratio=(0.75, 1.3333),
             attempts: int = 10) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (x0, y0, x1, y1) on an [H, W] image."""
    h, w = shape
    area = h * w
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        log_r = rng.uniform(math.log(ratio[0]), math.log(ratio[1]))
        r = math.exp(log_r)
        cw = int(round(math.sqrt(target * r)))
        ch = int(round(math.sqrt(target / r)))
        if 0 < cw <= w and 0 < ch <= h:
            y0 = int(rng.integers(0, h - ch + 1))
            x0 = int(rng.integers(0, w - cw + 1))
            return (x0, y0, x0 + cw, y0 + ch)
    s = min(h, w)  # central crop fallback, as torchvision
    return ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator,
                        scale=(0.2, 1.0), ratio=(0.75, 1.3333), attempts: int = 10) -> np.ndarray:
    """torchvision's RandomResizedCrop sampling on a uint8 [H, W] image -> [size, size]."""
    return resize(img, size, crop_box(img.shape, rng, scale, ratio, attempts))


def rotated_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator, max_degrees: float,
                         scale=(0.2, 1.0), ratio=(0.75, 1.3333)) -> np.ndarray:
    """``maybe_rotate`` then ``random_resized_crop`` as one affine resampling: the same random draws and the
    same geometry, one bilinear interpolation instead of two, and a faster pipeline (rotation 15 deg, 320 -> 256
    px, one core: ~840 -> 1,463 views/s, ``benchmarks/accelerator.py --full --parts pipeline``). Without
    rotation it is ``random_resized_crop`` itself."""
    if max_degrees <= 0:
        return random_resized_crop(img, size, rng, scale, ratio)
    angle = float(rng.uniform(-max_degrees, max_degrees))
    h, w = img.shape
    x0, y0, x1, y1 = crop_box((h, w), rng, scale, ratio)
    # Output -> source in PIL's continuous coordinates (pixel centres at +0.5): the crop maps output (u, v) to
    # q = (x0, y0) + (u sx, v sy) in the rotated frame, and Image.rotate samples that at A (q - c) + c.
    t = -math.radians(angle)
    a = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    c = np.array([w / 2, h / 2])
    lin = a @ np.diag([(x1 - x0) / size, (y1 - y0) / size])
    off = a @ (np.array([x0, y0], np.float64) - c) + c
    coeffs = (lin[0, 0], lin[0, 1], off[0], lin[1, 0], lin[1, 1], off[1])
    return np.asarray(Image.fromarray(img).transform((size, size), Image.AFFINE, coeffs, Image.BILINEAR, fillcolor=0))


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
