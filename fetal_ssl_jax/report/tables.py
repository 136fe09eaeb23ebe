"""Result tables from evaluation workdirs: one row per run, then mean ± std per setting over seeds.

The source of truth is each run's ``metrics.json`` (written last by probe / fine-tune / kNN),
so the tables can be rebuilt at any time, from any subset of finished runs. A sweep adds
``sweep_job.json`` beside it with the run's label in the grid (e.g. ``barlowtwins@variance``);
without it the init method of metrics.json is the label. std is the sample standard
deviation (ddof=1) over seeds; empty with a single seed.
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Iterable, Sequence

import numpy as np

METRICS = "metrics.json"
SWEEP_JOB = "sweep_job.json"
HEADLINE = ("macro_f1", "accuracy", "balanced_accuracy")
SETTING = ("init", "protocol", "fraction")


def find_runs(root: str) -> list[str]:
    """Evaluation workdirs under ``root`` (folders whose metrics.json has a test block), sorted."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in ("checkpoints", "features", "encoder", "selected", "logs"))
        if METRICS in files:
            out.append(d)
    return sorted(out)


def load_run(workdir: str, root: str = "") -> dict[str, Any] | None:
    """One flat row (settings, identity, val/test headline metrics, per-class test F1), or None if not an eval."""
    try:
        with open(os.path.join(workdir, METRICS)) as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if "test" not in m or "protocol" not in m:
        return None
    label = str(m.get("init_method", "?"))
    sj = os.path.join(workdir, SWEEP_JOB)
    if os.path.exists(sj):
        with open(sj) as f:
            label = json.load(f).get("init", label)
    init = m.get("init", {})
    row: dict[str, Any] = dict(
        init=label, method=m.get("init_method"), protocol=m["protocol"], fraction=float(m["fraction"]),
        seed=int(m["seed"]), run=os.path.relpath(workdir, root) if root else workdir,
        num_train=m.get("num_train"), arch=m.get("arch"), image_size=m.get("image_size"),
        init_source=init.get("source", "") if isinstance(init, dict) else str(init),
        config_hash=m.get("config_hash"), code_version=m.get("code_version"))
    for split in ("val", "test"):
        for k in HEADLINE:
            row[f"{split}_{k}"] = float(m[split][k])
    for c, v in m["test"].get("per_class_f1", {}).items():
        row[f"test_f1_{c}"] = float("nan") if v is None else float(v)
    row["_classes"] = list(m.get("classes", m["test"].get("per_class_f1", {}).keys()))
    row["_confusion"] = m["test"].get("confusion_matrix")
    row["_store"] = m.get("store")
    return row


def collect(root: str) -> list[dict[str, Any]]:
    rows = [load_run(d, root) for d in find_runs(root)]
    return [r for r in rows if r is not None]


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (init, protocol, fraction), for every metric column."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in SETTING), []).append(r)
    metric_cols = [k for k in _columns(rows) if k.startswith(("val_", "test_"))]
    out = []
    for key in sorted(groups, key=_setting_order):
        g = groups[key]
        s: dict[str, Any] = dict(zip(SETTING, key), n=len(g), seeds=" ".join(str(r["seed"]) for r in
                                                                               sorted(g, key=lambda r: r["seed"])))
        for c in metric_cols:
            s[f"{c}_mean"], s[f"{c}_std"] = mean_std(r.get(c, float("nan")) for r in g)
        out.append(s)
    return out


def _setting_order(key: tuple) -> tuple:
    init, protocol, fraction = key
    rank = {"imagenet": 1, "random": 2}.get(str(init), 0)  # SSL methods first, then ImageNet, then random
    return (str(protocol), rank, str(init), float(fraction))


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if not k.startswith("_") and k not in cols:
                cols.append(k)
    return cols


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> str:
    cols = _columns(rows)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_csv(r.get(k)) for k in cols})
    os.replace(tmp, path)
    return path


def _fmt_csv(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def pm(mean: float, std: float, scale: float = 100.0, digits: int = 1) -> str:
    """'61.3 ± 2.0' (F1 in percent points); '61.3' with one seed; '-' when missing."""
    if math.isnan(mean):
        return "-"
    return f"{mean * scale:.{digits}f}" + ("" if math.isnan(std) else f" ± {std * scale:.{digits}f}")


def _protocol_columns(items: Iterable[dict[str, Any]]) -> list[tuple[str, float]]:
    """(protocol, fraction) columns: fine-tune, then probe, then kNN (any other protocol after), by fraction."""
    rank = {"finetune": 0, "probe": 1, "knn": 2}
    return sorted({(s["protocol"], float(s["fraction"])) for s in items}, key=lambda t: (rank.get(t[0], 3), t[0], t[1]))


def _inits(items: Iterable[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for s in items:
        if s["init"] not in out:
            out.append(s["init"])
    return out


def markdown_table(summary: Sequence[dict[str, Any]], metric: str = "test_macro_f1", mark_best: bool = True) -> str:
    """Rows = init, columns = protocol x fraction; cells = mean ± std of ``metric`` in percent, the best mean of
    each column in bold (when more than one initialisation has it)."""
    cols = _protocol_columns(summary)
    inits = _inits(summary)
    cell = {(s["init"], s["protocol"], float(s["fraction"])): s for s in summary}
    best = {}
    for p, f in cols:
        means = [(cell[(i, p, f)][f"{metric}_mean"], i) for i in inits if (i, p, f) in cell
                 and not math.isnan(cell[(i, p, f)][f"{metric}_mean"])]
        if mark_best and len(means) > 1:
            best[(p, f)] = max(means)[1]
    head = "| init | " + " | ".join(f"{p} {f:g}%" for p, f in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for i in inits:
        vals = []
        for p, f in cols:
            s = cell.get((i, p, f))
            v = pm(s[f"{metric}_mean"], s[f"{metric}_std"]) + f" (n={s['n']})" if s else ""
            vals.append(f"**{v}**" if s and best.get((p, f)) == i else v)
        lines.append(f"| {i} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def paired_differences(rows: Sequence[dict[str, Any]], baseline: str = "random", metric: str = "test_macro_f1"
                       ) -> dict[tuple[str, str, float], list[float]]:
    """(init, protocol, fraction) -> per-seed differences init - baseline (same seed: same label subset, same
    split), over the seeds both have. The paired view removes the subset's share of the seed spread."""
    by = {(r["init"], r["protocol"], float(r["fraction"]), int(r["seed"])): r.get(metric) for r in rows}
    out: dict[tuple[str, str, float], list[float]] = {}
    for (init, prot, frac, seed), v in sorted(by.items(), key=lambda kv: (str(kv[0][0]), kv[0][1:])):
        b = by.get((baseline, prot, frac, seed))
        if init == baseline or b is None or v is None or math.isnan(v) or math.isnan(b):
            continue
        out.setdefault((init, prot, frac), []).append(float(v) - float(b))
    return out


def paired_table(rows: Sequence[dict[str, Any]], baseline: str = "random", metric: str = "test_macro_f1") -> str:
    """Rows = init, columns = protocol x fraction; cells = mean per-seed difference from ``baseline`` in points,
    with the number of seeds on which the init is ahead ('+5.2 (3/3)')."""
    diffs = paired_differences(rows, baseline, metric)
    if not diffs:
        return ""
    cols = _protocol_columns([dict(protocol=p, fraction=f) for _, p, f in diffs])
    inits = _inits([dict(init=i) for i, _, _ in diffs])
    head = "| init − " + baseline + " | " + " | ".join(f"{p} {f:g}%" for p, f in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for i in inits:
        vals = []
        for p, f in cols:
            d = diffs.get((i, p, f))
            vals.append(f"{100 * float(np.mean(d)):+.1f} ({sum(x > 0 for x in d)}/{len(d)})" if d else "")
        lines.append(f"| {i} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def write_tables(root: str, out_dir: str | None = None) -> tuple[list[dict], list[dict], list[str]]:
    """runs.csv + results.csv in ``out_dir`` (default ``root``); returns (rows, summary, paths)."""
    out_dir = out_dir or root
    os.makedirs(out_dir, exist_ok=True)
    rows = collect(root)
    summary = summarize(rows)
    paths = [write_csv(rows, os.path.join(out_dir, "runs.csv")),
             write_csv(summary, os.path.join(out_dir, "results.csv"))]
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump([{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()}
                   for s in summary], f, indent=1)
    paths.append(os.path.join(out_dir, "results.json"))
    return rows, summary, paths
