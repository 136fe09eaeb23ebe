"""Report figures (matplotlib, Agg): F1 vs label fraction, per-class F1, confusion matrices,
SSL training curves. Every axis is labelled with its unit; every multi-line plot has a legend.
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

# metrics.jsonl keys that are monitors, not loss components
MONITORS = {"step", "time", "images_per_sec", "finite", "lr", "param_norm", "embedding_std", "feature_std", "rankme",
            "rankme_feat", "positive_cos", "loss", "knn_val_f1", "knn_val_acc", "knn_seconds"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    fixed = {"random": "0.45", "imagenet": "black"}
    out, k = {}, 0
    for lab in labels:
        if lab in fixed:
            out[lab] = fixed[lab]
        else:
            out[lab] = cmap(k % 10)
            k += 1
    return out


def f1_vs_fraction(summary: Sequence[dict[str, Any]], path: str, metric: str = "test_macro_f1") -> str:
    """One panel per protocol: mean test macro-F1 (%) against label fraction (log x), error bars = std over seeds."""
    plt = _plt()
    protocols = sorted({s["protocol"] for s in summary})
    inits = list(dict.fromkeys(s["init"] for s in summary))
    colors = _colors(inits)
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.2 * len(protocols), 4.2), dpi=110, squeeze=False,
                             sharey=True)
    fractions = sorted({float(s["fraction"]) for s in summary})
    for ax, prot in zip(axes[0], protocols):
        for init in inits:
            pts = sorted((float(s["fraction"]), s[f"{metric}_mean"], s[f"{metric}_std"], s["n"]) for s in summary
                         if s["protocol"] == prot and s["init"] == init)
            if not pts:
                continue
            x = [p[0] for p in pts]
            y = [100 * p[1] for p in pts]
            e = [0.0 if math.isnan(p[2]) else 100 * p[2] for p in pts]
            style = dict(ls="--") if init in ("random", "imagenet") else {}
            ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=3, lw=1.5, color=colors[init], label=init, **style)
        ax.set_xscale("log")
        ax.set_xticks(fractions, [f"{f:g}%" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("labelled training images used (% of train split, log scale)")
        ax.set_title(f"{prot}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test {metric.replace('test_', '').replace('_', '-')} (%)")
    axes[0][-1].legend(title="initialisation", fontsize=8, loc="lower right")
    n = max((s["n"] for s in summary), default=0)
    fig.suptitle(f"Test macro-F1 vs label fraction (mean ± std over up to {n} seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def per_class_heatmap(summary: Sequence[dict[str, Any]], classes: Sequence[str], path: str) -> str:
    """Rows = setting (init, protocol, fraction), columns = plane; cell = mean test F1 (%) over seeds."""
    plt = _plt()
    rows = [s for s in summary if any(f"test_f1_{c}_mean" in s for c in classes)]
    data = np.array([[100 * s.get(f"test_f1_{c}_mean", float("nan")) for c in classes] for s in rows])
    labels = [f"{s['protocol']} | {s['init']} | {s['fraction']:g}%" for s in rows]
    fig, ax = plt.subplots(figsize=(1.0 * len(classes) + 4.5, 0.32 * len(rows) + 1.8), dpi=110)
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if not math.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] < 55 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xlabel("plane (true class)")
    ax.set_ylabel("protocol | initialisation | label fraction")
    ax.set_title("Per-class test F1 (%), mean over seeds", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="F1 (%)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def confusion_grid(runs: Sequence[dict[str, Any]], protocol: str, fraction: float, classes: Sequence[str],
                   path: str) -> str | None:
    """One panel per initialisation: test confusion matrix summed over seeds, colour = fraction of the true class."""
    plt = _plt()
    groups: dict[str, np.ndarray] = {}
    for r in runs:
        if r["protocol"] != protocol or float(r["fraction"]) != float(fraction) or r.get("_confusion") is None:
            continue
        cm = np.asarray(r["_confusion"], np.int64)
        groups[r["init"]] = groups.get(r["init"], 0) + cm
    if not groups:
        return None
    k = len(classes)
    n = len(groups)
    cols = min(4, n)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols + 0.8, 3.3 * nrows + 0.5), dpi=110, squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    im = None
    for ax, (init, cm) in zip(axes.ravel(), groups.items()):
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), classes, fontsize=7)
        ax.set_xlabel("predicted plane", fontsize=8)
        ax.set_ylabel("true plane", fontsize=8)
        ax.set_title(init, fontsize=9)
    fig.suptitle(f"Test confusion matrices, {protocol}, {fraction:g}% labels (counts summed over seeds)",
                 fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="fraction of true class")
    fig.savefig(path)
    plt.close(fig)
    return path


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl; a resumed run logs some steps twice: the last one wins."""
    by_step: dict[int, dict[str, Any]] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                by_step[int(row.get("step", len(by_step)))] = row
    return [by_step[s] for s in sorted(by_step)]


def training_curves(rows: Sequence[dict[str, Any]], label: str, path: str) -> str:
    """One pretraining run: loss, each loss component, embedding std, RankMe (projector output and backbone
    features), the periodic kNN val macro-F1 (when the run had ``monitor.every``) and learning rate against step."""
    plt = _plt()
    comps = [k for k in rows[0] if k not in MONITORS and not k.startswith("grad_norm")
             and isinstance(rows[0][k], (int, float))] if rows else []
    comps = sorted({k for r in rows for k in r if k not in MONITORS and not k.startswith("grad_norm")
                    and isinstance(r[k], (int, float))} | set(comps))
    panels = [("loss", "loss (method units)")] + [(c, f"{c} (loss term)") for c in comps] + [
        ("embedding_std", "embedding std (per dim, L2-normed)"), ("rankme", "RankMe, projector (effective rank)"),
        ("rankme_feat", "RankMe, backbone (effective rank)"), ("knn_val_f1", "kNN val macro-F1 (0-1)"),
        ("lr", "learning rate")]
    panels = [p for p in panels if any(p[0] in r for r in rows)]
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), dpi=100, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (key, ylabel) in zip(axes.ravel(), panels):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None, lw=1.2)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"SSL pretraining: {label}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def monitors_overlay(runs: dict[str, Sequence[dict[str, Any]]], path: str) -> str:
    """All pretraining runs together: loss relative to its first value, embedding std, RankMe (collapse monitors),
    and the periodic kNN val macro-F1 per method when any run logged it."""
    plt = _plt()
    colors = _colors(list(runs))
    keys = [("loss", "loss / first-step loss"), ("embedding_std", "embedding std (per dim)"),
            ("rankme", "RankMe, projector (effective rank)")]
    if any("knn_val_f1" in r for rows in runs.values() for r in rows):
        keys.append(("knn_val_f1", "kNN val macro-F1 (0-1)"))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.7 * len(keys), 3.8), dpi=100)
    for ax, (key, ylabel) in zip(axes, keys):
        for label, rows in runs.items():
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if not pts:
                continue
            y = np.asarray([p[1] for p in pts], np.float64)
            if key == "loss" and y[0] != 0:
                y = y / abs(y[0])
            ax.plot([p[0] for p in pts], y, color=colors[label], label=label, lw=1.3)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(title="method", fontsize=8)  # the loss panel always has data; RankMe may not
    fig.suptitle("SSL collapse monitors: a collapsing encoder drives embedding std and RankMe down", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def embedding_maps(maps: dict[str, tuple[np.ndarray, np.ndarray]], classes: Sequence[str], path: str) -> str:
    """One panel per encoder: 2-D t-SNE of its frozen test-set features, points coloured by true plane."""
    plt = _plt()
    n = len(maps)
    cols = min(4, n)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.5 * nrows + 0.4), dpi=110, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    cmap = plt.get_cmap("tab10")
    for ax, (label, (xy, y)) in zip(axes.ravel(), maps.items()):
        for c, name in enumerate(classes):
            m = y == c
            ax.scatter(xy[m, 0], xy[m, 1], s=7, color=cmap(c), label=name, alpha=0.8, linewidths=0)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("t-SNE 1 (a.u.)", fontsize=8)
        ax.set_ylabel("t-SNE 2 (a.u.)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes.ravel()[0].legend(title="plane", fontsize=7, markerscale=2, loc="best")
    fig.suptitle("Frozen-encoder features of the labelled test set (t-SNE), coloured by plane", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
