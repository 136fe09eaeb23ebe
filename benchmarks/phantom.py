#!/usr/bin/env python
"""Simulator throughput at 256x256, printed as JSON: sweep-video frames/s (wall and per CPU-second).

    python benchmarks/phantom.py [--size 256] [--frames 64] [--videos 4] [--workers 1 2]

Videos are rendered by a pool of threads (as ``phantom.generate`` does): NumPy and SciPy
release the GIL in the heavy array work, so two threads use both cores. For each worker
count it reports wall frames/s and frames per CPU-second (process CPU time, all threads);
on a shared machine the wall figure depends on the load, so the load average is printed
too and frames per CPU-second is the figure to compare across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fetal_ssl_jax.phantom import export, resolve, synthesis  # noqa: E402


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--stills", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    cfg = resolve("tiny", image_size=a.size, frames=a.frames)
    for p in range(2):  # warm caches (scan-conversion tables, fonts, thread pool imports)
        synthesis.render_video(cfg, 0, p, 0, frames=4)
    n = a.videos * a.frames
    res: dict = {"size": a.size, "video_frames": n, "cpu_count": os.cpu_count(),
                 "load_avg_1m_before": round(os.getloadavg()[0], 2)}
    vids = None
    for w in a.workers:
        with ThreadPoolExecutor(w) as ex:
            vids, wall, cpu = _timed(lambda: list(ex.map(lambda p: synthesis.render_video(cfg, 0, p, 0)[0],
                                                         range(a.videos))))
        res[f"render_frames_per_s_{w}w"] = round(n / wall, 1)
        res[f"render_frames_per_cpu_s_{w}w"] = round(n / cpu, 1)
    with tempfile.TemporaryDirectory() as d:
        _, enc_s, enc_cpu = _timed(lambda: [export.write_mp4(os.path.join(d, f"{k}.mp4"), v, cfg.fps)
                                            for k, v in enumerate(vids)])
    res["h264_frames_per_s"] = round(n / enc_s, 1)
    res["h264_frames_per_cpu_s"] = round(n / enc_cpu, 1)
    _, st_s, st_cpu = _timed(lambda: synthesis.render_stills(cfg, 0, 1000, [k % 5 for k in range(a.stills)]))
    res["stills_per_s"] = round(a.stills / st_s, 1)
    res["stills_per_cpu_s"] = round(a.stills / st_cpu, 1)
    res["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
