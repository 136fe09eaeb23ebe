#!/usr/bin/env python
"""Simulator throughput: frames/s of sweep-video rendering (and H.264 encoding) at 256x256, printed as JSON.

    python benchmarks/phantom.py [--size 256] [--frames 64] [--videos 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fetal_ssl_jax.phantom import export, resolve, synthesis  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--stills", type=int, default=64)
    a = ap.parse_args()
    cfg = resolve("tiny", image_size=a.size, frames=a.frames)
    synthesis.render_video(cfg, 0, 0, 0, frames=4)  # warm caches (scan-conversion tables, fonts)
    t, c = time.perf_counter(), time.process_time()
    vids = [synthesis.render_video(cfg, 0, p, 0)[0] for p in range(a.videos)]
    render_s, render_cpu = time.perf_counter() - t, time.process_time() - c
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        for k, v in enumerate(vids):
            export.write_mp4(os.path.join(d, f"{k}.mp4"), v, cfg.fps)
        enc_s = time.perf_counter() - t
    t = time.perf_counter()
    synthesis.render_stills(cfg, 0, 1000, [k % 5 for k in range(a.stills)])
    still_s = time.perf_counter() - t
    n = a.videos * a.frames
    print(json.dumps({
        "size": a.size, "video_frames": n,
        "render_frames_per_s": round(n / render_s, 1),
        "render_frames_per_cpu_s": round(n / render_cpu, 1),
        "render_plus_h264_frames_per_s": round(n / (render_s + enc_s), 1),
        "stills_per_s": round(a.stills / still_s, 1),
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
