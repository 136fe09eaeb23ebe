#!/usr/bin/env python
"""Ingest throughput of ``prepare frames`` against the raw decode rate of the same files.

Writes H.264 MP4 and DICOM (JPEG Baseline, YBR_FULL_422, the usual ultrasound
export) at 640x480, then times, per format: raw single-process decode to grayscale,
and the full conversion (fan detection, crop, resize to 256, records, shards) with
1 and 2 workers at stride 1 (every frame processed) and at the default stride 5.
Rates are source frames per second of wall time (pool start-up included). Prints JSON.

    python benchmarks/ingest.py [--files 4] [--frames 150] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from data_prep import frames, sample_media  # noqa: E402


def make_inputs(workdir: str, files: int, n: int) -> dict[str, str]:
    dirs = {"h264": os.path.join(workdir, "h264"), "dicom": os.path.join(workdir, "dicom")}
    for k in range(files):
        f = None
        for kind, d in dirs.items():
            path = os.path.join(d, f"P{k}", "clip.mp4" if kind == "h264" else "clip.dcm")
            if os.path.exists(path):
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if f is None:
                f = sample_media.fan_frames(n, 480, 640, seed=k)
            if kind == "h264":
                sample_media.write_video(path, f, crf=23)
            else:
                sample_media.write_dicom(path, np.repeat(f[..., None], 3, -1), "jpeg", patient_id=f"P{k}")
    return dirs


def raw_decode(kind: str, d: str) -> tuple[int, float]:
    """Single process, one thread: decode every frame to a grayscale array, nothing else."""
    import av
    from pydicom.pixels import iter_pixels
    n, t0 = 0, time.perf_counter()
    for root, _, names in sorted(os.walk(d)):
        for name in sorted(names):
            p = os.path.join(root, name)
            if kind == "h264":
                with av.open(p) as c:
                    s = c.streams.video[0]
                    s.codec_context.thread_count = 1
                    for fr in c.decode(s):
                        fr.to_ndarray(format="gray")
                        n += 1
            else:
                for arr in iter_pixels(p, as_rgb=False):
                    n += 1
    return n, time.perf_counter() - t0


def worker_startup() -> float:
    """Seconds to start one spawned worker that imports the converter (paid once per pool)."""
    import concurrent.futures as cf
    import multiprocessing as mp
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        ex.submit(_warm).result()
    return time.perf_counter() - t0


def _warm() -> None:
    import data_prep.frames  # noqa: F401


def ingest(d: str, out: str, workers: int, stride: int) -> tuple[int, float]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = frames.build(d, out, frames.FrameSettings(size=256, stride=stride), workers=workers, salt="bench",
                       progress=False)
    dt = time.perf_counter() - t0
    n = sum(v["sampled"] * stride for v in res.manifest["videos"])  # source frames covered
    return n, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--workdir", default=None, help="keep inputs here between runs")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="ingest_bench_")
    dirs = make_inputs(work, args.files, args.frames)
    result: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "input": f"{args.files} files x {args.frames} frames, 640x480 -> 256x256", "formats": {}}
    for kind, d in dirs.items():
        n, dt = raw_decode(kind, d)
        r = {"raw_decode_fps_1proc": round(n / dt, 1), "frames": n}
        m0, dt0 = ingest(d, os.path.join(work, f"store_{kind}"), 0, 1)
        r["ingest_fps_stride1_inprocess"] = round(m0 / dt0, 1)
        for stride in (1, 5):
            for w in (1, 2):
                m, dt2 = ingest(d, os.path.join(work, f"store_{kind}"), w, stride)
                r[f"ingest_fps_stride{stride}_workers{w}"] = round(m / dt2, 1)
        r["ratio_stride1_workers1_vs_raw"] = round(r["ingest_fps_stride1_workers1"] / r["raw_decode_fps_1proc"], 3)
        r["ratio_stride1_workers2_vs_raw"] = round(r["ingest_fps_stride1_workers2"] / r["raw_decode_fps_1proc"], 3)
        result["formats"][kind] = r
    result["worker_startup_s"] = round(worker_startup(), 2)
    result["peak_rss_mb"] = {
        "main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "largest_worker": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
