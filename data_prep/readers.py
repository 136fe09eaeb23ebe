"""Frame readers for every input format, all yielding uint8 grayscale [H, W] frames.

Readers stream: they hold one decoded frame at a time, so memory does not grow
with video length. Each source opens into one or more ``Clip``s (an HDF5 file may
hold several frame stacks); a problem that makes a file unusable raises
``BadSource`` with a reason meant for the user.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Iterator

import numpy as np

VIDEO_EXT = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ogv"}
DICOM_EXT = {".dcm", ".dicom", ".dic"}
HDF5_EXT = {".h5", ".hdf5", ".hdf", ".he5"}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
KIND_OF_EXT = {**{e: "video" for e in VIDEO_EXT}, **{e: "dicom" for e in DICOM_EXT},
               **{e: "hdf5" for e in HDF5_EXT}, **{e: "image" for e in IMAGE_EXT}}


class BadSource(Exception):
    """A file that cannot be converted; the message is the reason shown to the user."""


def sniff(path: str) -> str | None:
    """Content type from magic bytes ('video', 'dicom', 'hdf5', 'image', 'empty') or None."""
    with open(path, "rb") as f:
        head = f.read(132)
    if not head:
        return "empty"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff") or head[:2] in (b"BM", b"II", b"MM"):
        return "image"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip") or \
            (head.startswith(b"RIFF") and head[8:11] == b"AVI") or head.startswith(b"\x1aE\xdf\xa3"):
        return "video"
    return None


def kind_of(path: str) -> str | None:
    """What a file is by name, or by content for extension-less DICOM; None = not media (ignored)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in KIND_OF_EXT:
        return KIND_OF_EXT[ext]
    if ext == "":
        try:
            return "dicom" if sniff(path) == "dicom" else None
        except OSError:
            return None
    return None


def check_content(path: str, kind: str) -> None:
    """Refuses empty files and files whose content contradicts their extension."""
    got = sniff(path)
    if got == "empty":
        raise BadSource("empty file (0 bytes)")
    if got is not None and got != kind:
        raise BadSource(f"wrong extension: named as {kind} ({os.path.splitext(path)[1] or 'no extension'}) "
                        f"but the content is {got}")


@dataclasses.dataclass
class Clip:
    """One frame sequence of a source.

    ``frames(stride)`` yields (source frame index, uint8 [H, W]); ``lut`` (if set) maps
    decoded values to full range and is applied after resizing, where it is cheaper.
    """

    name: str
    frames: Callable[[int], Iterator[tuple[int, np.ndarray]]]
    patient_hint: str | None = None
    num_frames: int | None = None
    lut: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------- conversions

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


_LIMITED_LUT = np.clip((np.arange(256) - 16) * (255.0 / 219.0) + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- video (PyAV)

_Y_FORMATS = ("yuv", "nv12", "nv21", "gray")


def open_video(path: str, threads: int = 1) -> list[Clip]:
    import av
    try:
        with av.open(path) as c:
            if not c.streams.video:
                raise BadSource("no video stream in the container")
            s = c.streams.video[0]
            n = int(s.frames or 0) or None
            meta = {"codec": s.codec_context.name, "width": s.codec_context.width, "height": s.codec_context.height}
    except av.error.FFmpegError as e:
        raise BadSource(f"cannot open video (truncated or damaged?): {getattr(e, 'strerror', None) or e}") from None

    clip = Clip(name="", frames=lambda stride: _video_frames(path, stride, threads, clip), num_frames=n, meta=meta)
    return [clip]


def _video_frames(path: str, stride: int, threads: int, clip: Clip) -> Iterator[tuple[int, np.ndarray]]:
    import av
    with av.open(path) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = max(1, threads)
        s.thread_type = "AUTO" if threads > 1 else "SLICE"
        i = -1
        try:
            for i, fr in enumerate(c.decode(s)):
                if i % stride:
                    continue
                fmt = fr.format.name
                if fmt.startswith(_Y_FORMATS):
                    # The luma plane is the grayscale image: no colour conversion needed.
                    p = fr.planes[0]
                    y = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                    full = fmt.startswith(("yuvj", "gray")) or int(fr.color_range or 0) == 2
                    clip.lut = None if full else _LIMITED_LUT
                    yield i, y
                else:
                    clip.lut = None
                    yield i, fr.to_ndarray(format="gray")
        except av.error.FFmpegError as e:
            raise BadSource(f"decode error after {i + 1} frames: {getattr(e, 'strerror', None) or e}") from None
        if i < 0:
            raise BadSource("zero frames decoded")


# ---------------------------------------------------------------- DICOM (pydicom + pylibjpeg)

def open_dicom(path: str) -> list[Clip]:
    import pydicom
    from pydicom.pixels import get_decoder
    try:
        ds = pydicom.dcmread(path, defer_size="1 KB")
    except Exception as e:  # pydicom raises many types for damaged files
        raise BadSource(f"not a readable DICOM file: {type(e).__name__}: {e}") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise BadSource("DICOM has no pixel data (no PixelData element)")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is None:
        raise BadSource("DICOM has no transfer syntax in its file meta")
    try:
        dec = get_decoder(ts)
        ok = dec.is_available
    except NotImplementedError:
        ok = False
    if not ok:
        raise BadSource(f"unsupported transfer syntax {getattr(ts, 'name', ts)} ({ts}): no decoder installed")
    n = int(ds.get("NumberOfFrames", 1) or 0)
    if n <= 0:
        raise BadSource("zero frames (NumberOfFrames = 0)")
    bits = int(ds.get("BitsStored", 8) or 8)
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    pid = str(ds.get("PatientID", "") or "").strip() or None
    meta = {"transfer_syntax": str(ts), "photometric": pi, "rows": int(ds.get("Rows", 0)),
            "columns": int(ds.get("Columns", 0)), "bits_stored": bits}
    return [Clip(name="", frames=lambda stride: _dicom_frames(path, n, stride, bits, pi), patient_hint=pid,
                 num_frames=n, meta=meta)]


def _dicom_frames(path: str, n: int, stride: int, bits: int, pi: str) -> Iterator[tuple[int, np.ndarray]]:
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_color_lut, iter_pixels
    out = Dataset()
    idx = list(range(0, n, stride))
    it = iter_pixels(path, indices=idx, ds_out=out, as_rgb=False)
    k = -1
    try:
        for k, arr in enumerate(it):
            now = str(out.get("PhotometricInterpretation", pi))
            if now.startswith("YBR") and arr.ndim == 3:
                arr = arr[..., 0]  # Y is the luma: the grayscale image, no conversion needed
            elif now == "PALETTE COLOR":
                arr = apply_color_lut(arr, out)
            yield idx[k], to_uint8_gray(arr, bits if bits > 8 else None, mono1=(now == "MONOCHROME1"))
    except BadSource:
        raise
    except Exception as e:
        raise BadSource(f"DICOM pixel decode failed at frame {idx[k + 1] if k + 1 < len(idx) else k + 1}: "
                        f"{type(e).__name__}: {e}") from None


# ---------------------------------------------------------------- HDF5 (h5py)

def open_hdf5(path: str) -> list[Clip]:
    import h5py
    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise BadSource(f"not a readable HDF5 file: {e}") from None
    names: list[tuple[str, tuple]] = []
    with f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and _is_stack(obj.shape):
                names.append((name, obj.shape))
        f.visititems(visit)
    if not names:
        raise BadSource("no frame-stack dataset (frames x H x W [x C]) in the HDF5 file")
    clips = []
    for name, shape in sorted(names):
        clips.append(Clip(name=name, frames=lambda stride, name=name: _hdf5_frames(path, name, stride),
                          num_frames=int(shape[0]), meta={"dataset": name, "shape": list(shape)}))
    return clips


def _is_stack(shape: tuple) -> bool:
    return len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3, 4))


def _hdf5_frames(path: str, name: str, stride: int) -> Iterator[tuple[int, np.ndarray]]:
    import h5py
    with h5py.File(path, "r") as f:
        ds = f[name]
        if ds.shape[0] == 0:
            raise BadSource(f"zero frames in dataset {name}")
        bits = int(ds.attrs.get("bits_stored", 0)) or None
        for i in range(0, ds.shape[0], stride):
            yield i, to_uint8_gray(ds[i], bits)


# ---------------------------------------------------------------- images and PNG sequences

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


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """frame2 before frame10."""
    return [int(t) if t.isdigit() else t for t in _DIGITS.split(name)]


def sequence_prefix(name: str) -> str:
    """'frame_0012.png' -> 'frame_': files of one sequence share it."""
    stem = os.path.splitext(name)[0]
    return _DIGITS.sub("#", stem)


def open_sequence(folder: str, files: list[str], on_bad: Callable[[str, str], None]) -> list[Clip]:
    files = sorted(files, key=natural_key)

    def frames(stride: int) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(0, len(files), stride):
            try:
                yield i, read_image(os.path.join(folder, files[i]))
            except BadSource as e:
                on_bad(files[i], str(e))
    return [Clip(name="", frames=frames, num_frames=len(files), meta={"files": len(files)})]


def open_source(path: str, kind: str, threads: int = 1, seq_files: list[str] | None = None,
                on_bad: Callable[[str, str], None] | None = None) -> list[Clip]:
    """Opens a source (a media file, or a folder for a PNG sequence) into its clips."""
    if kind == "sequence":
        return open_sequence(path, seq_files or [], on_bad or (lambda f, r: None))
    check_content(path, kind)
    if kind == "video":
        return open_video(path, threads)
    if kind == "dicom":
        return open_dicom(path)
    if kind == "hdf5":
        return open_hdf5(path)
    raise BadSource(f"unsupported kind {kind}")
