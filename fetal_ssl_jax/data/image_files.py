"""Still image files: what a file is by its first bytes, and any still (PNG/JPEG/BMP/TIFF, 8 or 16 bit,
gray or colour) as uint8 grayscale. Shared by data prep's readers and the labelled-store builder.

Failures raise ``errors.BadSource`` with a reason meant for the user.
"""
from __future__ import annotations

import numpy as np

from fetal_ssl_jax.errors import BadSource


def sniff(path: str) -> str | None:
    """Content type from magic bytes ('video', 'dicom', 'hdf5', 'image', 'empty') or None."""
    with open(path, "rb") as f:
        head = f.read(132)
    if not head:
        return "empty"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"  # first: vendors put TIFF (or other) headers in the preamble on purpose ("dual personality")
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff") or head[:2] in (b"BM", b"II", b"MM"):
        return "image"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip") or \
            (head.startswith(b"RIFF") and head[8:11] == b"AVI") or head.startswith(b"\x1aE\xdf\xa3"):
        return "video"
    return None


def to_uint8_gray(arr: np.ndarray, bits: int | None = None, mono1: bool = False) -> np.ndarray:
    """Any [H, W] / [H, W, C] integer or float frame -> uint8 [H, W] (BT.601 luma for colour)."""
    a = np.asarray(arr)
    if a.ndim == 3:
        c = a.shape[-1]
        if c == 1:
            a = a[..., 0]
        elif c in (3, 4):
            a = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114 if a.dtype != np.uint8 else \
                ((a[..., 0].astype(np.uint32) * 19595 + a[..., 1].astype(np.uint32) * 38470
                  + a[..., 2].astype(np.uint32) * 7471 + 32768) >> 16).astype(np.uint8)
        else:
            raise BadSource(f"unsupported channel count {c}")
    elif a.ndim != 2:
        raise BadSource(f"unsupported frame shape {a.shape}")
    if a.dtype == np.uint8:
        out = a
    elif a.dtype.kind in "ui":
        top = (1 << bits) - 1 if bits else (255 if a.dtype.itemsize == 1 else 65535)
        if a.dtype.kind == "i" and a.min() < 0:
            a = a.astype(np.int64) + (top + 1) // 2
        out = np.clip(a.astype(np.float32) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype.kind == "f":
        scale = 255.0 if float(np.nanmax(a)) <= 1.0 else 1.0
        out = np.clip(np.nan_to_num(a) * scale + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype == np.bool_:
        out = a.astype(np.uint8) * 255
    else:
        raise BadSource(f"unsupported pixel type {a.dtype}")
    return 255 - out if mono1 else out


def read_image(path: str) -> np.ndarray:
    """One still image (PNG/JPEG/BMP/TIFF, 8 or 16 bit, gray or colour) -> uint8 [H, W]."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                return to_uint8_gray(np.asarray(im).astype(np.uint16))
            if mode == "I":
                a = np.asarray(im)
                return to_uint8_gray(a.astype(np.uint16) if a.max() > 255 else a.astype(np.uint8))
            if mode == "F":
                return to_uint8_gray(np.asarray(im))
            if mode != "L":
                im = im.convert("L")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadSource(f"unreadable image: {type(e).__name__}: {e}") from None
