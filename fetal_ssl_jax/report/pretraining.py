"""One row per SSL pretraining run: where it ended (loss, collapse monitors, kNN on val) and what it cost.

A table of methods is only honest if every method in it trained without collapsing; this is the table that
says so, next to the results. Read from each run's metrics.jsonl (the rows the loop logged).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

# (column, metrics.jsonl key, format) — last logged value unless noted
COLUMNS = (("loss", "loss", "{:.4g}"), ("RankMe proj.", "rankme", "{:.0f}"), ("RankMe backbone", "rankme_feat", "{:.0f}"),
           ("embedding std", "embedding_std", "{:.3f}"), ("feature std", "feature_std", "{:.3f}"),
           ("kNN val F1", "knn_val_f1", "{:.1%}"))


def last(rows: Sequence[dict[str, Any]], key: str) -> float:
    for r in reversed(rows):
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    return float("nan")


def train_seconds(rows: Sequence[dict[str, Any]]) -> float:
    """Wall time of the logged steps; ``time`` restarts at 0 when a run resumes, so segments are summed."""
    total, prev = 0.0, 0.0
    for r in rows:
        t = r.get("time")
        if not isinstance(t, (int, float)):
            continue
        if t < prev:  # a resumed segment
            total += prev
        prev = float(t)
    return total + prev


def summary(curves: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for label, rows in curves.items():
        row: dict[str, Any] = dict(init=label, steps=int(last(rows, "step")) if rows else 0,
                                   seconds=train_seconds(rows))
        for _, key, _ in COLUMNS:
            row[key] = last(rows, key)
        row["knn_val_f1_best"] = max((float(r["knn_val_f1"]) for r in rows
                                      if isinstance(r.get("knn_val_f1"), (int, float))), default=float("nan"))
        out.append(row)
    return out


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    head = "| init | steps | minutes | " + " | ".join(c for c, _, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in rows:
        vals = [("-" if math.isnan(r[k]) else f.format(r[k])) for _, k, f in COLUMNS]
        lines.append(f"| {r['init']} | {r['steps']} | {r['seconds'] / 60:.1f} | " + " | ".join(vals) + " |")
    return "\n".join(lines)
