"""Writing the simulated hospital export: videos + sidecars, labelled stills, labels.csv.

Layout (what ``data_prep`` ingests, the same as for real data)::

    videos/<patient>/<video>.mp4|.dcm|.avi   sweep videos (H.264 MP4 by default)
    videos/<patient>/<video>.json            sidecar: true sweep position s and plane per frame
    images/<patient>_<n>.png                 labelled stills
    labels.csv                               image_path,class,patient_id
    phantom.json                             settings and counts of this export

All writers are deterministic (single-threaded x264, fixed DICOM UIDs, no timestamps), so
the same seed gives byte-identical files.
"""
from __future__ import annotations

import csv
import dataclasses
import fractions
import hashlib
import json
import os
import time
from typing import Any, Callable

import numpy as np
from PIL import Image

from fetal_ssl_jax.phantom import anatomy as A
from fetal_ssl_jax.phantom import synthesis as Y
from fetal_ssl_jax.phantom.presets import PhantomConfig

VIDEO_EXT = {"mp4": ".mp4", "dicom": ".dcm", "avi": ".avi"}


def _fps_fraction(fps: float) -> fractions.Fraction:
    return fractions.Fraction(fps).limit_denominator(1001)


def write_mp4(path: str, frames: np.ndarray, fps: float, crf: int = 18) -> None:
    """H.264 (libx264, yuv420p) via PyAV; one encoder thread keeps the bitstream deterministic."""
    import av
    with av.open(path, mode="w", format="mp4") as c:
        st = c.add_stream("libx264", rate=_fps_fraction(fps),
                          options={"crf": str(crf), "preset": "veryfast", "threads": "1", "bf": "0"})
        st.width, st.height = frames.shape[2], frames.shape[1]
        st.pix_fmt = "yuv420p"
        st.codec_context.thread_count = 1
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="gray")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


def write_avi(path: str, frames: np.ndarray, fps: float) -> None:
    """Motion-JPEG AVI, the usual older-cart export."""
    import av
    with av.open(path, mode="w", format="avi") as c:
        st = c.add_stream("mjpeg", rate=_fps_fraction(fps), options={"q:v": "3"})
        st.width, st.height = frames.shape[2], frames.shape[1]
        st.pix_fmt = "yuvj420p"
        st.codec_context.thread_count = 1
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="gray")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


def write_dicom(path: str, frames: np.ndarray, fps: float, patient_id: str, uid_key: str) -> None:
    """Ultrasound Multi-frame Image (cine), uncompressed, with UIDs derived from the content key."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def uid(tag: str) -> str:
        return generate_uid(entropy_srcs=[uid_key, tag])

    sop_class = "1.2.840.10008.5.1.4.1.1.3.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "FETALSSL_PHANTOM"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.Modality, ds.PatientID, ds.PatientName = "US", patient_id, "ANON^" + patient_id
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20200101", 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.NumberOfFrames = int(frames.shape[0])
    ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = f"{1000.0 / fps:.3f}"
    ds.CineRate = int(round(fps))
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0018, 0x1063)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_video(path_stem: str, frames: np.ndarray, fps: float, fmt: str, patient_id: str, key: str) -> str:
    path = path_stem + VIDEO_EXT[fmt]
    if fmt == "mp4":
        write_mp4(path, frames, fps)
    elif fmt == "avi":
        write_avi(path, frames, fps)
    else:
        write_dicom(path, frames, fps, patient_id, key)
    return path


def _dump_json(path: str, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=None, separators=(",", ":"), sort_keys=True)
        f.write("\n")


def generate(out_dir: str, cfg: PhantomConfig, seed: int = 0, progress: bool = False,
             log: Callable[[str], None] | None = None, workers: int | None = None) -> dict[str, Any]:
    """Write the whole export; returns the summary also stored in phantom.json."""
    t0 = time.perf_counter()
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    os.makedirs(out_dir, exist_ok=True)
    vids = list(Y.iter_videos(cfg, seed))
    alloc = Y.allocate_classes(cfg, seed)
    total = len(vids) + len(alloc)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="synth", unit="item")
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)

    def one_video(item: tuple[str, int, int]) -> int:
        vid, p, v = item
        pid = Y.patient_id(p)
        d = os.path.join(out_dir, "videos", pid)
        os.makedirs(d, exist_ok=True)
        frames, meta = Y.render_video(cfg, seed, p, v)
        path = write_video(os.path.join(d, vid), frames, cfg.fps, cfg.format, pid, f"{seed}/{vid}")
        meta.update(video_id=vid, file=os.path.relpath(path, out_dir).replace(os.sep, "/"), seed=seed)
        _dump_json(os.path.join(d, vid + ".json"), meta)
        return int(frames.shape[0])

    def one_patient(item: tuple[int, list[int]]) -> list[tuple[str, str, str]]:
        i, classes = item
        if not classes:
            return []
        p = Y.labelled_patient_index(cfg, i)
        pid = Y.patient_id(p)
        out = []
        for n, (img, c) in enumerate(zip(Y.render_stills(cfg, seed, p, classes), classes)):
            rel = f"images/{pid}_{n:03d}.png"
            Image.fromarray(img).save(os.path.join(out_dir, rel), optimize=False, compress_level=6)
            out.append((rel, A.CLASSES[c], pid))
        return out

    # Items are independent (own random streams, own files), so threads change speed, never bytes;
    # NumPy, SciPy, zlib and x264 release the GIL for the heavy parts.
    from concurrent.futures import ThreadPoolExecutor
    n_frames = 0
    rows: list[tuple[str, str, str]] = []
    with ThreadPoolExecutor(max(1, int(workers))) as ex:
        for nf in ex.map(one_video, vids):
            n_frames += nf
            if bar is not None:
                bar.update(1)
        for r in ex.map(one_patient, enumerate(alloc)):
            rows.extend(r)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    with open(os.path.join(out_dir, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("image_path", "class", "patient_id"))
        w.writerows(rows)
    counts = {c: sum(1 for r in rows if r[1] == c) for c in A.CLASSES}
    summary = {
        "out_dir": os.path.abspath(out_dir),
        "seed": seed,
        "settings": dataclasses.asdict(cfg),
        "classes": list(A.CLASSES),
        "num_videos": len(vids),
        "num_video_patients": cfg.video_patients(),
        "num_frames": n_frames,
        "num_images": len(rows),
        "num_labelled_patients": len([a for a in alloc if a]),
        "class_counts": counts,
        "keyframes": A.KEYFRAMES,
        "plane_half_width": A.PLANE_HALF_WIDTH,
    }
    _dump_json(os.path.join(out_dir, "phantom.json"), summary)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if log:
        log(f"wrote {len(vids)} videos ({n_frames} frames) and {len(rows)} labelled images to {out_dir} "
            f"in {summary['seconds']} s; classes {counts}")
    return summary


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
