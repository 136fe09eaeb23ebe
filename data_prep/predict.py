"""`launch.py predict --checkpoint DIR VIDEO [--out DIR]`: the plane finder over a sweep video.

Reads every frame of a sweep video (MP4/AVI/MOV via PyAV, DICOM cine via pydicom, HDF5) with
data prep's own code (``frames.iter_clip``: fan crop, aspect-kept resize to the labelled store's
resolution), then ``fetal_ssl_jax.evaluate.plane_scoring`` scores it with a fine-tuned classifier
(or a linear probe) after the same resize to the network's input size as evaluation, so the
classifier sees inputs as in training. Writes per-frame plane probabilities (JSON), a timeline
PNG, and the best frame of each plane as a PNG with its score. With the simulator's sidecar JSON
(``<video>.json``) beside the video, the found frames are scored against the true plane
positions (frame error). It lives here, beside the readers, because the library never imports
data_prep.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from fetal_ssl_jax import errors


def read_frames(video: str, size: int, stride: int = 1, crop: str = "fan") -> tuple[np.ndarray, np.ndarray, float | None]:
    """(frames uint8 [T, size, size] after data prep's crop/resize, source frame indices [T], fps or None)."""
    from data_prep import readers
    from data_prep.frames import FrameSettings, iter_clip
    kind = readers.kind_of(video)
    if kind is None:
        raise ValueError(f"{video}: not a video / DICOM / HDF5 file")
    clips = readers.open_source(video, kind)
    st = FrameSettings(size=size, stride=stride, crop=crop, dedup_threshold=0.0, blank_threshold=0)
    idx, frames = [], []
    for i, f in iter_clip(clips[0], st, {}):
        idx.append(i)
        frames.append(f)
    return np.stack(frames), np.asarray(idx), _fps(video, kind)


def _fps(video: str, kind: str) -> float | None:
    try:
        if kind == "video":
            import av
            with av.open(video) as c:
                r = c.streams.video[0].average_rate
                return float(r) if r else None
        if kind == "dicom":
            import pydicom
            ds = pydicom.dcmread(video, stop_before_pixels=True)
            if ds.get("CineRate"):
                return float(ds.CineRate)
            if ds.get("FrameTime"):
                return 1000.0 / float(ds.FrameTime)
    except Exception:
        return None
    return None


def predict(checkpoint: str, video: str, out: str, stride: int = 1, window: int = 5, crop: str = "fan",
            truth_path: str | None = None) -> dict[str, Any]:
    """Scores the video and writes predictions.json, timeline.png, best_<plane>.png into ``out``."""
    from fetal_ssl_jax.evaluate import plane_scoring
    clf = plane_scoring.load_classifier(checkpoint)
    frames, idx, fps = read_frames(video, clf.store_size, stride, crop)
    truth_path = truth_path or os.path.splitext(video)[0] + ".json"
    truth = None
    if os.path.exists(truth_path):
        with open(truth_path) as f:
            cand = json.load(f)
        truth = cand if isinstance(cand, dict) and "plane" in cand else None
    found = plane_scoring.find_planes(clf, frames, idx, out, fps, window, truth, os.path.basename(video))
    first = ("checkpoint", "classes", "fps", "num_frames")
    result = dict(video=os.path.abspath(video), **{k: found.pop(k) for k in first}, stride=stride, **found)
    with open(os.path.join(out, "predictions.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="fine-tune (or probe) workdir of launch.py finetune/probe")
    p.add_argument("video", help="sweep video: MP4/AVI/MOV, DICOM cine, HDF5")
    p.add_argument("--out", default=None, help="output folder (default: <video name>_planes beside the video)")
    p.add_argument("--stride", type=int, default=1, help="score every n-th frame")
    p.add_argument("--smooth", type=int, default=5, help="moving-average window over frames (1 = off)")
    p.add_argument("--crop", choices=("fan", "none"), default="fan", help="as in launch.py prepare")
    p.add_argument("--truth", default=None, help="sidecar JSON with the true plane per frame (default <video>.json)")


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    if not os.path.exists(args.video):
        print(f"launch.py predict: no such file {args.video}", file=sys.stderr)
        return errors.USAGE
    out = args.out or os.path.splitext(args.video)[0] + "_planes"
    try:
        r = predict(args.checkpoint, args.video, out, args.stride, args.smooth, args.crop, args.truth)
    except (FileNotFoundError, ValueError) as e:
        print(f"launch.py predict: {e}", file=sys.stderr)
        return errors.USAGE
    for name, b in r["best"].items():
        when = f" ({b['time_s']:.2f} s)" if b.get("time_s") is not None else ""
        print(f"{name:>6}: best frame {b['frame']}{when} score {b['score']:.3f} -> {b['png']}")
    fe = r["frame_error"]
    if fe:
        print(f"vs sidecar truth: mean frame error {fe['mean_frame_error']:.1f} frames to the plane centre, "
              f"{fe['mean_window_distance']:.1f} frames to the nearest true plane frame; "
              f"{100 * fe['fraction_in_window']:.0f}% of best frames inside the true plane window")
    print(f"wrote {out}/predictions.json, timeline.png")
    return 0
