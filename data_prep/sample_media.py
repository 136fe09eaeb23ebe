"""Small files in the real formats, written with the real encoders (tests and benchmarks).

The frames look like an ultrasound screen: a sector fan whose speckle changes every
frame, on black, with static burned-in text boxes outside the fan (what fan
detection must remove).
"""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np


def fan_mask(h: int, w: int, angle_deg: float = 70.0) -> np.ndarray:
    """Bool [h, w]: a sector with its apex near the top centre."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ay, ax = 0.08 * h, w / 2
    r = np.hypot(yy - ay, xx - ax)
    th = np.degrees(np.arctan2(xx - ax, yy - ay))
    return (r < 0.85 * h) & (r > 0.02 * h) & (np.abs(th) < angle_deg / 2)


def fan_frames(n: int, h: int, w: int, seed: int = 0, rgb: bool = False) -> np.ndarray:
    """uint8 [n, h, w] (or [n, h, w, 3] tinted): moving blobs + speckle in a fan, static UI text."""
    rng = np.random.default_rng(seed)
    m = fan_mask(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((n, h, w), np.uint8)
    base = 60 + 60 * np.exp(-((yy - 0.5 * h) ** 2 + (xx - 0.5 * w) ** 2) / (0.05 * h * w))
    for i in range(n):
        cy, cx = 0.45 * h + 0.1 * h * np.sin(i / 3), 0.5 * w + 0.1 * w * np.cos(i / 4)
        blob = 90 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.01 * h * w))
        img = (base + blob) * rng.rayleigh(0.8, (h, w))
        out[i] = np.where(m, np.clip(img, 0, 255), 0).astype(np.uint8)
    # burned-in UI: bright boxes in the corners, identical on every frame
    bh, bw = max(2, h // 12), max(4, w // 6)
    out[:, 1:1 + bh, 1:1 + bw] = 220
    out[:, h - bh - 1:h - 1, w - bw - 1:w - 1] = 200
    if rgb:
        return np.stack([out, (out * 0.9).astype(np.uint8), (out * 0.8).astype(np.uint8)], -1)
    return out


def write_video(path: str, frames: np.ndarray, codec: str = "libx264", fps: int = 25, crf: int = 18) -> None:
    """MP4/H.264 (libx264) or AVI/MJPEG, gray or RGB frames."""
    import av
    n, h, w = frames.shape[:3]
    with av.open(path, "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps))
        s.width, s.height = w, h
        if codec == "mjpeg":
            s.pix_fmt = "yuvj420p"
            s.bit_rate = 40_000_000  # near-lossless, so tests can compare pixels
        else:
            s.pix_fmt = "yuv420p"
            s.options = {"crf": str(crf), "preset": "veryfast"}
        fmt = "rgb24" if frames.ndim == 4 else "gray"
        for fr in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format=fmt)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_dicom(path: str, frames: np.ndarray, syntax: str = "raw", patient_id: str = "PAT-001",
                bits: int = 8, pixel_data: bool = True) -> None:
    """Ultrasound multi-frame DICOM: syntax raw (explicit VR LE), rle, or jpeg (baseline; YBR_FULL_422 for RGB)."""
    import io

    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (JPEGBaseline8Bit, ExplicitVRLittleEndian, RLELossless, generate_uid)

    rgb = frames.ndim == 4
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = patient_id, "US"
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    if not pixel_data:
        pass
    elif syntax == "raw":
        ds.PixelData = np.ascontiguousarray(frames).tobytes()
    elif syntax == "rle":
        ds.PixelData = np.ascontiguousarray(frames).tobytes()
        ds.compress(RLELossless, encoding_plugin="pydicom")
    elif syntax == "jpeg":
        enc = []
        for fr in frames:
            b = io.BytesIO()
            Image.fromarray(fr).save(b, format="JPEG", quality=95, subsampling=1 if rgb else 0)  # 1 = 4:2:2
            enc.append(b.getvalue())
        ds.PixelData = encapsulate(enc)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        if rgb:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
    else:
        raise ValueError(syntax)
    ds.save_as(path, enforce_file_format=True)


def write_hdf5(path: str, stacks: dict[str, np.ndarray]) -> None:
    import h5py
    with h5py.File(path, "w") as f:
        for name, arr in stacks.items():
            f.create_dataset(name, data=arr, chunks=(1,) + arr.shape[1:] if arr.shape[0] else None)


def write_png(path: str, img: np.ndarray, bits: int = 8) -> None:
    """8-bit gray/RGB, or 16-bit gray (values scaled by 257)."""
    from PIL import Image
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if bits == 16:
        Image.fromarray(img.astype(np.uint16) * 257).save(path)
    else:
        Image.fromarray(img).save(path)
