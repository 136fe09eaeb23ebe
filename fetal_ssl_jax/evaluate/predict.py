"""`launch.py predict --checkpoint DIR VIDEO [--out DIR]`: the plane finder.

Scores every frame of a sweep video (MP4/AVI/MOV via PyAV, DICOM cine via pydicom, HDF5)
with a fine-tuned classifier (or a linear probe), and writes per-frame plane
probabilities (JSON), a timeline PNG, and the best frame of each plane as a PNG with its
score. Frames go through data prep's own code (``data_prep.frames.iter_clip``: fan crop,
aspect-kept resize to the labelled store's resolution) and then the same resize to the
network's input size as evaluation, so the classifier sees inputs as in training.
With the simulator's sidecar JSON (``<video>.json``) beside the video, the found frames are
scored against the true plane positions (frame error).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass
class Classifier:
    apply: Callable[[np.ndarray], np.ndarray]   # uint8 [N, size, size] -> probabilities [N, K]
    classes: list[str]
    image_size: int                              # network input size
    store_size: int                              # resolution of the labelled store it was trained on
    source: str


def _store_size(store: str | None, default: int) -> int:
    try:
        with open(os.path.join(store or "", "manifest.json")) as f:
            return int(json.load(f)["settings"]["size"])
    except (OSError, KeyError, ValueError, TypeError):
        return default


def _jitted_forward(model: Any, variables: Any, mean: float, std: float, batch: int = 64
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 frames [N, H, W] -> eval-mode outputs [N, ...], through the evaluation's batched forward."""
    from fetal_ssl_jax.evaluate.features import ShardedForward, backbone_apply
    forward = ShardedForward(backbone_apply(model), mean, std, batch)
    return lambda images: np.asarray(forward(variables, images), np.float32)


def load_classifier(workdir: str) -> Classifier:
    """A fine-tune workdir (its selected model in ``encoder/``, with the 'fc' head) or a probe workdir
    (``probe_head.npz`` on top of the encoder it probed)."""
    from fetal_ssl_jax.models import build_backbone
    from fetal_ssl_jax.train import encoder_io

    metrics_path = os.path.join(workdir, "metrics.json")
    m = json.load(open(metrics_path)) if os.path.exists(metrics_path) else {}
    if os.path.exists(os.path.join(workdir, "probe_head.npz")):
        return _probe_classifier(workdir, m)
    model_cfg, variables, meta = encoder_io.load_encoder(workdir)
    if "fc" not in variables["params"]:
        raise ValueError(f"{workdir}: the encoder has no classifier head ('fc'); give a fine-tune workdir "
                         "(launch.py finetune) or a probe workdir")
    classes = list(meta.get("classes") or m.get("classes") or [])
    k = int(np.asarray(variables["params"]["fc"]["kernel"]).shape[-1])
    classes = classes if len(classes) == k else [f"class{i}" for i in range(k)]
    model = build_backbone(model_cfg, num_classes=k)
    norm = meta.get("normalize", {})
    logits = _jitted_forward(model, variables, float(norm.get("mean", 0.5)), float(norm.get("std", 0.25)))
    size = int(meta.get("image_size", m.get("image_size", 64)))
    return Classifier(lambda x: _softmax(logits(x)), classes, size, _store_size(m.get("store"), size),
                      encoder_io.resolve(workdir))


def _probe_classifier(workdir: str, m: dict[str, Any]) -> Classifier:
    from fetal_ssl_jax.models import build_backbone
    from fetal_ssl_jax.train import encoder_io
    init = m.get("init", {})
    if not m or init.get("kind") != "ssl":
        raise ValueError(f"{workdir}: only probes of an SSL encoder can be replayed (init {init.get('kind')!r})")
    model_cfg, variables, meta = encoder_io.load_encoder(init["source"])
    variables = {"params": {k: v for k, v in variables["params"].items() if k != "fc"},
                 "batch_stats": variables["batch_stats"]}
    head = np.load(os.path.join(workdir, "probe_head.npz"))
    norm = meta.get("normalize", {})
    feats = _jitted_forward(build_backbone(model_cfg), variables, float(norm.get("mean", 0.5)),
                            float(norm.get("std", 0.25)))
    w, b, mu, sd = (np.asarray(head[k], np.float32) for k in ("w", "b", "mean", "std"))
    size = int(m.get("image_size", meta.get("image_size", 64)))
    return Classifier(lambda x: _softmax(((feats(x) - mu) / sd) @ w + b), list(m["classes"]), size,
                      _store_size(m.get("store"), size), os.path.join(workdir, "probe_head.npz"))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


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


def smooth(probs: np.ndarray, window: int) -> np.ndarray:
    """Moving average over frames (odd window; 1 = none): a plane is held for several frames, noise is not."""
    if window <= 1 or len(probs) < 2:
        return probs
    k = np.ones(window) / window
    pad = window // 2
    padded = np.pad(probs, ((pad, pad), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, c], k, mode="valid") for c in range(probs.shape[1])], 1)


def best_frames(probs: np.ndarray, frame_idx: np.ndarray, classes: list[str]) -> dict[str, dict[str, Any]]:
    """Per plane: the frame where its probability peaks, and that probability."""
    out = {}
    for c, name in enumerate(classes):
        t = int(np.argmax(probs[:, c]))
        out[name] = dict(position=t, frame=int(frame_idx[t]), score=float(probs[t, c]))
    return out


def frame_errors(best: dict[str, dict[str, Any]], truth: dict[str, Any]) -> dict[str, Any]:
    """Against a simulator sidecar: |found frame - true centre frame| per plane (centre = the labelled frame
    nearest the plane's keyframe), and whether the found frame lies inside the plane's labelled window."""
    planes = np.asarray(truth["plane"])
    s = np.asarray(truth.get("s", []), np.float64)
    try:
        from fetal_ssl_jax.phantom.anatomy import KEYFRAMES
    except ImportError:
        KEYFRAMES = {}
    per: dict[str, Any] = {}
    for name, b in best.items():
        frames = np.flatnonzero(planes == name)
        if frames.size == 0:
            continue
        if name in KEYFRAMES and s.size == planes.size:
            centre = int(frames[np.argmin(np.abs(s[frames] - KEYFRAMES[name]))])
        else:
            centre = int(np.median(frames))
        f = int(b["frame"])
        per[name] = dict(true_frame=centre, found_frame=f, error=abs(f - centre), in_window=bool(planes[f] == name)
                         if f < planes.size else False, window=[int(frames.min()), int(frames.max())],
                         window_distance=int(np.abs(frames - f).min()))  # 0 inside; sweeps may pass a plane twice
    errs = [v["error"] for v in per.values()]
    return dict(per_plane=per, mean_frame_error=float(np.mean(errs)) if errs else None,
                mean_window_distance=float(np.mean([v["window_distance"] for v in per.values()])) if per else None,
                fraction_in_window=float(np.mean([v["in_window"] for v in per.values()])) if per else None)


def timeline_png(probs: np.ndarray, frame_idx: np.ndarray, classes: list[str], best: dict[str, dict[str, Any]],
                 path: str, fps: float | None, truth: dict[str, Any] | None, title: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(11, 3.8), dpi=110)
    if truth is not None:
        planes = np.asarray(truth["plane"])
        for c, name in enumerate(classes):
            on = planes == name
            for a, b in _runs(on):
                ax.axvspan(a - 0.5, b + 0.5, color=cmap(c), alpha=0.15, lw=0)
    for c, name in enumerate(classes):
        ax.plot(frame_idx, probs[:, c], color=cmap(c), lw=1.4, label=name)
        b = best[name]
        ax.plot([b["frame"]], [b["score"]], marker="v", ms=8, color=cmap(c), mec="black")
    ax.set_xlabel("frame index" + (f" ({fps:g} frames/s)" if fps else ""))
    ax.set_ylabel("plane probability")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlim(frame_idx.min() - 0.5, frame_idx.max() + 0.5)
    if fps:
        sec = ax.secondary_xaxis("top", functions=(lambda f: f / fps, lambda t: t * fps))
        sec.set_xlabel("time (s)")
    note = "  (shaded: true plane windows from the sidecar)" if truth is not None else ""
    ax.set_title(title + note, fontsize=9)
    ax.legend(title="plane (▼ best frame)", fontsize=8, ncol=len(classes), loc="upper center",
              bbox_to_anchor=(0.5, -0.2))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    out, start = [], None
    for i, v in enumerate(mask):
        if v and start is None:
            start = i
        if not v and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(mask) - 1))
    return out


def best_frame_png(frame: np.ndarray, name: str, b: dict[str, Any], fps: float | None, path: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3.6, 3.9), dpi=110)
    ax.imshow(frame, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    when = f", t = {b['frame'] / fps:.2f} s" if fps else ""
    ax.set_title(f"{name}: score {b['score']:.3f}\nframe {b['frame']}{when}", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def predict(checkpoint: str, video: str, out: str, stride: int = 1, window: int = 5, crop: str = "fan",
            truth_path: str | None = None) -> dict[str, Any]:
    """Scores the video and writes predictions.json, timeline.png, best_<plane>.png into ``out``."""
    from fetal_ssl_jax.evaluate.features import to_size
    clf = load_classifier(checkpoint)
    frames, idx, fps = read_frames(video, clf.store_size, stride, crop)
    probs_raw = clf.apply(to_size(frames, clf.image_size))
    probs = smooth(probs_raw, window)
    best = best_frames(probs, idx, clf.classes)
    os.makedirs(out, exist_ok=True)
    truth_path = truth_path or os.path.splitext(video)[0] + ".json"
    truth = None
    if os.path.exists(truth_path):
        with open(truth_path) as f:
            cand = json.load(f)
        truth = cand if isinstance(cand, dict) and "plane" in cand else None
    for name, b in best.items():
        b["png"] = best_frame_png(frames[b["position"]], name, b, fps, os.path.join(out, f"best_{name}.png"))
        b["time_s"] = b["frame"] / fps if fps else None
    errors = frame_errors(best, truth) if truth is not None else None
    title = f"{os.path.basename(video)}: per-frame plane probabilities (moving average over {window} frames)"
    tl = timeline_png(probs, idx, clf.classes, best, os.path.join(out, "timeline.png"), fps, truth, title)
    result = dict(video=os.path.abspath(video), checkpoint=clf.source, classes=clf.classes, fps=fps,
                  num_frames=int(len(idx)), stride=stride, smoothing_window=window, frame_index=idx.tolist(),
                  probabilities=np.round(probs_raw, 5).tolist(), best=best, timeline=tl,
                  predicted_plane=[clf.classes[i] for i in probs.argmax(1)], frame_error=errors)
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
        return 2
    out = args.out or os.path.splitext(args.video)[0] + "_planes"
    try:
        r = predict(args.checkpoint, args.video, out, args.stride, args.smooth, args.crop, args.truth)
    except (FileNotFoundError, ValueError) as e:
        print(f"launch.py predict: {e}", file=sys.stderr)
        return 2
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
