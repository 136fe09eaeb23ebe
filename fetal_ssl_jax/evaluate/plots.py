"""PNGs of an evaluation (matplotlib, no display needed): the confusion matrix written beside metrics.json,
and the plane finder's timeline and best frames."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_matrix_png(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str, title: str = "") -> str:
    """Row-normalised colours (recall per true class) annotated with the raw counts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, np.int64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.2, 1.1 * k + 1.6), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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
