"""The plane finder's library: a finished run's classifier scores prepared frames; best frame per plane.

``load_classifier`` turns a fine-tune workdir (its selected model with the 'fc' head) or a probe
workdir (``probe_head.npz`` on an SSL encoder) into a frame scorer that runs through evaluation's
batched forward; ``find_planes`` scores frames, smooths the probabilities over time, picks the
best frame of each plane, writes the outputs, and, given the simulator's sidecar, the frame error.
Reading a video as ``prepare`` does (fan crop, resize) is data prep's job: ``launch.py predict``
(data_prep/predict.py) reads the frames and calls this.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import numpy as np

from fetal_ssl_jax.data.host_augment import to_size
from fetal_ssl_jax.evaluate import plots


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
    from fetal_ssl_jax.evaluate.features import ShardedForward, backbone_apply  # JAX: imported when used
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


def find_planes(clf: Classifier, frames: np.ndarray, frame_idx: np.ndarray, out: str, fps: float | None = None,
                window: int = 5, truth: dict[str, Any] | None = None, name: str = "video") -> dict[str, Any]:
    """Scores frames (uint8 [T, store size, store size], prepared as the labelled store was) and writes
    predictions.json, timeline.png, best_<plane>.png into ``out``; ``truth``: the simulator's sidecar."""
    probs_raw = clf.apply(to_size(frames, clf.image_size))
    probs = smooth(probs_raw, window)
    best = best_frames(probs, frame_idx, clf.classes)
    os.makedirs(out, exist_ok=True)
    for plane, b in best.items():
        b["png"] = plots.best_frame_png(frames[b["position"]], plane, b, fps, os.path.join(out, f"best_{plane}.png"))
        b["time_s"] = b["frame"] / fps if fps else None
    errors = frame_errors(best, truth) if truth is not None else None
    title = f"{name}: per-frame plane probabilities (moving average over {window} frames)"
    tl = plots.timeline_png(probs, frame_idx, clf.classes, best, os.path.join(out, "timeline.png"), fps, truth, title)
    return dict(checkpoint=clf.source, classes=clf.classes, fps=fps, num_frames=int(len(frame_idx)),
                smoothing_window=window, frame_index=frame_idx.tolist(),
                probabilities=np.round(probs_raw, 5).tolist(), best=best, timeline=tl,
                predicted_plane=[clf.classes[i] for i in probs.argmax(1)], frame_error=errors)
