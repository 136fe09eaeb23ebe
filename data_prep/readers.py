"""Frame readers for every input format, all yielding uint8 grayscale [H, W] frames.

Readers stream: they hold one decoded frame at a time, so memory does not grow
with video length. Each source opens into one or more ``Clip``s (an HDF5 file may
hold several frame stacks); a problem that makes a file unusable raises
``BadSource`` with a reason meant for the user. Still images (``read_image``), the content
sniffer and the grayscale conversion live in fetal_ssl_jax/data/image_files.py, shared with the
labelled-store builder.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Iterator

import numpy as np

from fetal_ssl_jax.data.image_files import read_image, sniff, to_uint8_gray  # noqa: F401 (this module's API too)
from fetal_ssl_jax.errors import BadSource

VIDEO_EXT = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ogv"}
DICOM_EXT = {".dcm", ".dicom", ".dic"}
HDF5_EXT = {".h5", ".hdf5", ".hdf", ".he5"}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
KIND_OF_EXT = {**{e: "video" for e in VIDEO_EXT}, **{e: "dicom" for e in DICOM_EXT},
               **{e: "hdf5" for e in HDF5_EXT}, **{e: "image" for e in IMAGE_EXT}}


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
    ``colour`` is set by the generator before each frame it yields: bool [H, W] of that frame's
    colour-flow (Doppler) pixels, or None for a grey frame. ``meta`` may hold ``timing``
    (frame_time_ms, fps, source), ``region`` (a calibrated scan region) and ``warnings``.
    """

    name: str
    frames: Callable[[int], Iterator[tuple[int, np.ndarray]]]
    patient_hint: str | None = None
    num_frames: int | None = None
    lut: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)
    colour: np.ndarray | None = None


# ---------------------------------------------------------------- conversions

_LIMITED_LUT = np.clip((np.arange(256) - 16) * (255.0 / 219.0) + 0.5, 0, 255).astype(np.uint8)

# A pixel is colour flow when its chroma is strong in absolute terms and against its brightness:
# vendor B-mode tints (sepia, blue-grey) stay well under both, Doppler red/blue/yellow far over.
CHROMA_MIN = 20      # max(|Cb-128|, |Cr-128|), 8-bit
CHROMA_PER_Y = 3     # chroma * 3 >= Y


def colour_mask(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray | None:
    """bool [H, W] of colour-flow pixels from uint8 Y, Cb, Cr planes; None when a coarse look finds none."""
    if not _chroma_test(y[::4, ::4], cb[::4, ::4], cr[::4, ::4]).any():  # cheap: grey frames stop here
        return None
    m = _chroma_test(y, cb, cr)
    return m if m.any() else None


def _chroma_test(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    c = np.maximum(np.abs(cb.astype(np.int16) - 128), np.abs(cr.astype(np.int16) - 128))
    return (c >= CHROMA_MIN) & (c * CHROMA_PER_Y >= y)


def _rgb_to_ybr(a: np.ndarray) -> list[np.ndarray]:
    f = a.astype(np.float32)
    y = f @ np.float32([0.299, 0.587, 0.114])
    return [np.clip(p, 0, 255) for p in (y, 128 + (f[..., 2] - y) * 0.564, 128 + (f[..., 0] - y) * 0.713)]


def rgb_colour_mask(rgb: np.ndarray) -> np.ndarray | None:
    """Colour-flow pixels of a uint8 RGB [H, W, 3] frame (via BT.601 full-range chroma)."""
    if not _chroma_test(*_rgb_to_ybr(rgb[::4, ::4])).any():
        return None
    m = _chroma_test(*_rgb_to_ybr(rgb))
    return m if m.any() else None


def _to_uint8_channels(a: np.ndarray, bits: int | None) -> np.ndarray:
    if a.dtype == np.uint8 and not bits:
        return a
    top = (1 << bits) - 1 if bits else (255 if a.dtype.itemsize == 1 else 65535)
    return np.clip(a.astype(np.float32) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)


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
            meta = {"codec": s.codec_context.name, "width": s.codec_context.width, "height": s.codec_context.height,
                    "timing": _video_timing(s)}
    except av.error.FFmpegError as e:
        raise BadSource(f"cannot open video (truncated or damaged?): {getattr(e, 'strerror', None) or e}") from None

    clip = Clip(name="", frames=lambda stride: _video_frames(path, stride, threads, clip), num_frames=n, meta=meta)
    return [clip]


def _video_timing(s) -> dict | None:
    """Frame rate from the container's timestamps (FFmpeg's average rate, else its guess)."""
    for rate in (s.average_rate, s.guessed_rate):
        try:
            fps = float(rate) if rate else 0.0
        except (TypeError, ZeroDivisionError):
            fps = 0.0
        if 0 < fps < 10000:
            return {"frame_time_ms": round(1000.0 / fps, 4), "fps": round(fps, 4), "source": "container"}
    return None


def _yuv_colour(fr, y: np.ndarray) -> np.ndarray | None:
    """Colour-flow mask of a planar YUV frame from its (possibly subsampled) chroma planes."""
    if len(fr.planes) < 3:
        return None
    pu, pv = fr.planes[1], fr.planes[2]
    u = np.frombuffer(pu, np.uint8).reshape(pu.height, pu.line_size)[:, :pu.width]
    v = np.frombuffer(pv, np.uint8).reshape(pv.height, pv.line_size)[:, :pv.width]
    fy, fx = -(-y.shape[0] // u.shape[0]), -(-y.shape[1] // u.shape[1])
    m = colour_mask(y[::fy, ::fx][:u.shape[0], :u.shape[1]], u, v)
    if m is None:
        return None
    return np.repeat(np.repeat(m, fy, 0), fx, 1)[:y.shape[0], :y.shape[1]]


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
                    clip.colour = _yuv_colour(fr, y) if fmt.startswith("yuv") else None
                    yield i, y
                else:
                    clip.lut = None
                    clip.colour = None
                    yield i, fr.to_ndarray(format="gray")
        except av.error.FFmpegError as e:
            raise BadSource(f"decode error after {i + 1} frames: {getattr(e, 'strerror', None) or e}") from None
        if i < 0:
            raise BadSource("zero frames decoded")


# ---------------------------------------------------------------- DICOM (pydicom + pylibjpeg)

# Every PhotometricInterpretation pydicom can decode for an image we can turn into grey.
PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
               "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT")


def _read_dicom(path: str):
    """(dataset, warning): the DICOM file format ('DICM' at byte 128), else a raw data set read with force=True."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:
        return pydicom.dcmread(path, defer_size="1 KB"), None
    except InvalidDicomError:
        pass  # no preamble/'DICM' marker: may still be a bare data set, which some exporters write
    except Exception as e:  # pydicom raises many types for damaged files
        raise BadSource(f"not a readable DICOM file: {type(e).__name__}: {e}") from None
    try:
        ds = pydicom.dcmread(path, force=True)
        has_pixels = "PixelData" in ds
        if not len(ds) or (not has_pixels and not any(t.group in (0x0008, 0x0010, 0x0020, 0x0028) for t in ds.keys())):
            raise ValueError("no DICOM elements found")
    except Exception as e:
        raise BadSource(f"not a readable DICOM file: no 'DICM' marker at byte 128, and read as a raw data set: "
                        f"{type(e).__name__}: {e}") from None
    return ds, "no 'DICM' marker at byte 128 (no preamble): read as a raw DICOM data set (force=True)"


def _raw_transfer_syntax(ds):
    """Transfer syntax of a data set read without file meta, from how pydicom found it encoded."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
    if ds["PixelData"].is_undefined_length:
        raise BadSource("compressed (encapsulated) pixel data but no transfer syntax: the file has no DICOM "
                        "file meta, so the codec is unknown")
    implicit, little = ds.original_encoding
    ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    return ts


def dicom_timing(ds) -> dict | None:
    """Frame timing from FrameTime, FrameTimeVector, CineRate or RecommendedDisplayFrameRate (in that order)."""
    from pydicom.multival import MultiValue
    def num(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return f if np.isfinite(f) and f > 0 else None
    ft = num(ds.get("FrameTime"))
    src = "FrameTime"
    v = ds.get("FrameTimeVector")
    if ft is None and v is not None:
        steps = [x for x in (num(t) for t in (list(v) if isinstance(v, (list, tuple, MultiValue)) else [v])[1:]) if x]
        if steps:
            ft, src = float(np.mean(steps)), "FrameTimeVector"
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        if ft is None and num(ds.get(key)):
            ft, src = 1000.0 / num(ds.get(key)), key
    if ft is None:
        return None
    return {"frame_time_ms": round(ft, 4), "fps": round(1000.0 / ft, 4), "source": src}


_CM_UNITS = 3  # PhysicalUnitsX/YDirection: 3 = cm


def us_region(ds, rows: int, cols: int) -> tuple[dict | None, str | None]:
    """The 2-D image region of the Ultrasound Region Calibration module, or (None, why it is not usable).

    Picks the largest 2-D region of tissue data (RegionDataType 1), else the largest 2-D region of any
    data type; bbox = (y0, y1, x0, x1) with exclusive ends; mm_per_pixel = (row, column) when the
    physical units are cm, else None.
    """
    seq = ds.get("SequenceOfUltrasoundRegions")
    if not seq:
        return None, None
    cands, bad = [], 0
    for r in seq:
        try:
            if int(r.get("RegionSpatialFormat", 0) or 0) != 1:  # 1 = 2D; M-mode/spectral strips are not images
                continue
            x0, y0, x1, y1 = (int(r.get(k)) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                                      "RegionLocationMaxX1", "RegionLocationMaxY1"))
        except (TypeError, ValueError):
            bad += 1
            continue
        if not (0 <= x0 < x1 < cols and 0 <= y0 < y1 < rows) or (x1 - x0) < 8 or (y1 - y0) < 8:
            bad += 1
            continue
        mm = None
        try:
            if int(r.get("PhysicalUnitsXDirection", 0)) == _CM_UNITS and \
                    int(r.get("PhysicalUnitsYDirection", 0)) == _CM_UNITS:
                dx, dy = abs(float(r.PhysicalDeltaX)) * 10, abs(float(r.PhysicalDeltaY)) * 10
                if dx > 0 and dy > 0 and np.isfinite(dx + dy):
                    mm = [round(dy, 6), round(dx, 6)]
        except (AttributeError, TypeError, ValueError):
            mm = None
        tissue = int(r.get("RegionDataType", 0) or 0) == 1
        cands.append((tissue, (x1 - x0 + 1) * (y1 - y0 + 1), [y0, y1 + 1, x0, x1 + 1], mm))
    if not cands:
        why = (f"{bad} ultrasound region(s) lie outside the {rows}x{cols} image" if bad
               else "no 2-D region in SequenceOfUltrasoundRegions")
        return None, f"{why}: region calibration not used, fan detection instead"
    tissue, _, bbox, mm = max(cands, key=lambda c: (c[0], c[1]))
    return {"bbox": bbox, "mm_per_pixel": mm, "tissue": tissue}, None


def _grey_lut(bits: int, signed: bool, mono1: bool, container_bits: int) -> np.ndarray | None:
    """uint8 lookup over every stored word: masks bits above BitsStored, centres signed data, scales to 8 bits."""
    if bits == 8 and container_bits == 8 and not signed and not mono1:
        return None
    words = np.arange(1 << container_bits, dtype=np.int64)
    v = words & ((1 << bits) - 1)
    if signed:
        v ^= 1 << (bits - 1)  # two's complement -> offset binary
    lut = np.clip(v * (255.0 / ((1 << bits) - 1)) + 0.5, 0, 255).astype(np.uint8)
    return 255 - lut if mono1 else lut


def _palette_tables(ds, container_bits: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey value and colour-flow flag per palette index, with the LUT entries' bit depth (8 or 16) respected."""
    from pydicom.pixels import apply_color_lut
    idx = np.arange(1 << container_bits, dtype=np.uint16 if container_bits > 8 else np.uint8)
    try:
        rgb = np.asarray(apply_color_lut(idx, ds))
    except Exception as e:
        raise BadSource(f"PALETTE COLOR lookup tables unusable: {type(e).__name__}: {e}") from None
    if rgb.dtype.itemsize > 1 and int(rgb.max()) > 255:
        rgb8 = _to_uint8_channels(rgb.astype(np.uint16), 16)   # 16-bit entries: scale, do not clip
    else:
        rgb8 = rgb.astype(np.uint8)  # 8-bit entries (also when written in 16-bit words)
    grey = to_uint8_gray(rgb8[:, None, :])[:, 0]
    m = _chroma_test(*_rgb_to_ybr(rgb8))
    return grey, (m if m.any() else None)


def _words(arr: np.ndarray) -> np.ndarray:
    """Stored words as unsigned integers (the index into a per-word lookup table)."""
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2:
        return arr
    if arr.dtype.kind == "i" and arr.dtype.itemsize <= 2:
        return arr.view(np.uint8 if arr.dtype.itemsize == 1 else np.uint16)
    return (arr.astype(np.int64) & 0xFFFF).astype(np.uint16)


def _dicom_converter(ds, pi: str, bits: int, container_bits: int, signed: bool):
    """(decoded frame, photometric after decoding) -> (uint8 grey [H, W], colour-flow mask or None)."""
    grey_lut = _grey_lut(bits, signed, pi == "MONOCHROME1", container_bits) if pi.startswith("MONO") else None
    palette = _palette_tables(ds, container_bits) if pi == "PALETTE COLOR" else None
    cbits = bits if bits != 8 * (container_bits // 8) else None

    def convert(arr: np.ndarray, now: str) -> tuple[np.ndarray, np.ndarray | None]:
        if now.startswith("MONO") or arr.ndim == 2 and palette is None:
            if grey_lut is None:
                return (arr if arr.dtype == np.uint8 else to_uint8_gray(arr, bits)), None
            return grey_lut[_words(arr)], None
        if now == "PALETTE COLOR":
            g, col = palette
            a = np.minimum(_words(arr), len(g) - 1)
            m = None if col is None else col[a]
            return g[a], (m if m is not None and m.any() else None)
        if arr.ndim != 3 or arr.shape[-1] < 3:
            raise BadSource(f"{now} data decoded with shape {arr.shape}, expected H x W x 3")
        a = _to_uint8_channels(arr[..., :3], cbits)
        if now.startswith("YBR") and now not in ("YBR_ICT", "YBR_RCT"):  # J2K codecs undo ICT/RCT: data is RGB
            return np.ascontiguousarray(a[..., 0]), colour_mask(a[..., 0], a[..., 1], a[..., 2])
        return to_uint8_gray(a), rgb_colour_mask(a)
    return convert


def open_dicom(path: str) -> list[Clip]:
    from pydicom.pixels import get_decoder
    ds, forced = _read_dicom(path)
    try:
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise BadSource("DICOM has no pixel data (no PixelData element)"
                            + (f"; {forced}" if forced else ""))
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if ts is None and forced:
            ts = _raw_transfer_syntax(ds)
            forced += f", transfer syntax taken as {ts.name}"
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
        pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        if pi not in PHOTOMETRIC:
            raise BadSource(f"unsupported photometric interpretation {pi!r} (read: {', '.join(PHOTOMETRIC)})")
        alloc = int(ds.get("BitsAllocated", 8) or 8)
        bits = int(ds.get("BitsStored", alloc) or alloc)
        if not (1 <= bits <= 16 and bits <= alloc):
            raise BadSource(f"unsupported bit depth: BitsStored {bits} with BitsAllocated {alloc} (1 to 16 bits read)")
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
        convert = _dicom_converter(ds, pi, bits, 16 if alloc > 8 else 8, signed)
        region, region_problem = us_region(ds, rows, cols)
    except BadSource:
        raise
    except Exception as e:  # a malformed element deep in a vendor file
        raise BadSource(f"DICOM header unusable: {type(e).__name__}: {e}") from None
    pid = str(ds.get("PatientID", "") or "").strip() or None
    meta = {"transfer_syntax": str(ts), "photometric": pi, "rows": rows, "columns": cols, "bits_stored": bits,
            "timing": dicom_timing(ds), "region": region,
            "warnings": [w for w in (forced, region_problem) if w]}
    src = ds if forced else path  # a raw data set is decoded from memory: pydicom cannot reopen it by path
    native_422 = pi == "YBR_FULL_422" and not ts.is_compressed
    clip = Clip(name="", frames=lambda stride: _dicom_frames(src, n, stride, pi, convert, clip, native_422),
                patient_hint=pid,
                num_frames=n, meta=meta)
    return [clip]


def _dicom_frames(src, n: int, stride: int, pi: str, convert, clip: Clip,
                  native_422: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    from pydicom.dataset import Dataset
    from pydicom.pixels import iter_pixels, pixel_array
    out = Dataset()
    idx = list(range(0, n, stride))
    if native_422:  # pydicom 3.0 iter_pixels misplaces frames after the first of uncompressed YBR_FULL_422
        it = (pixel_array(src, index=i, ds_out=out, as_rgb=False) for i in idx)
    else:
        it = iter_pixels(src, indices=idx, ds_out=out, as_rgb=False)
    k = -1
    try:
        for k, arr in enumerate(it):
            grey, clip.colour = convert(arr, str(out.get("PhotometricInterpretation", pi)).strip().upper())
            yield idx[k], grey
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
        clip = Clip(name=name, frames=None, num_frames=int(shape[0]), meta={"dataset": name, "shape": list(shape)})
        clip.frames = lambda stride, name=name, clip=clip: _hdf5_frames(path, name, stride, clip)
        clips.append(clip)
    return clips


def _is_stack(shape: tuple) -> bool:
    return len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3, 4))


def _hdf5_frames(path: str, name: str, stride: int, clip: Clip | None = None) -> Iterator[tuple[int, np.ndarray]]:
    import h5py
    with h5py.File(path, "r") as f:
        ds = f[name]
        if ds.shape[0] == 0:
            raise BadSource(f"zero frames in dataset {name}")
        bits = int(ds.attrs.get("bits_stored", 0)) or None
        for i in range(0, ds.shape[0], stride):
            a = ds[i]
            if clip is not None:
                clip.colour = rgb_colour_mask(_to_uint8_channels(a[..., :3], bits)) \
                    if a.ndim == 3 and a.shape[-1] >= 3 and a.dtype.kind in "ui" else None
            yield i, to_uint8_gray(a, bits)


# ---------------------------------------------------------------- images and PNG sequences

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
