"""`launch.py report --workdir DIR [--out DIR]`: report.md, runs.csv, results.csv and PNG plots.

Reads every finished evaluation (metrics.json) and pretraining run (metrics.jsonl + encoder/)
under DIR, so it works on a sweep folder, on a demo folder, or on any tree of runs.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, Sequence

from fetal_ssl_jax.report import patients_curve, plots, pretraining, tables


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True, help="folder holding the runs (a sweep or demo workdir)")
    p.add_argument("--out", default=None, help="where report.md, the CSVs and plots/ go (default: --workdir)")
    p.add_argument("--no-embeddings", action="store_true", help="skip the t-SNE embedding maps (the slow part)")
    p.add_argument("--max-points", type=int, default=400, help="test images per embedding map")
    p.add_argument("--store", default=None, help="labelled store for the embedding maps (default: the runs' store)")


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    if not os.path.isdir(args.workdir):
        print(f"launch.py report: no such folder {args.workdir}", file=sys.stderr)
        return 2
    paths = write_report(args.workdir, args.out, embeddings=not args.no_embeddings, max_points=args.max_points,
                         store=args.store)
    print("wrote " + ", ".join(paths))
    return 0


def highlights(summary: Sequence[dict[str, Any]]) -> list[str]:
    """Best initialisation vs random at the smallest label fraction of each protocol."""
    out = []
    for prot in sorted({s["protocol"] for s in summary}):
        rows = [s for s in summary if s["protocol"] == prot]
        f = min(float(s["fraction"]) for s in rows)
        at = [s for s in rows if float(s["fraction"]) == f and not math.isnan(s["test_macro_f1_mean"])]
        rnd = next((s for s in at if s["init"] == "random"), None)
        best = max((s for s in at if s["init"] != "random"), key=lambda s: s["test_macro_f1_mean"], default=None)
        if best is None:
            continue
        line = (f"- **{prot}, {f:g}% labels**: best initialisation {best['init']} "
                f"{tables.pm(best['test_macro_f1_mean'], best['test_macro_f1_std'])}")
        if rnd is not None:
            d = 100 * (best["test_macro_f1_mean"] - rnd["test_macro_f1_mean"])
            line += (f" vs random {tables.pm(rnd['test_macro_f1_mean'], rnd['test_macro_f1_std'])} "
                     f"({d:+.1f} F1 points")
            spread = 100 * max(float(best["test_macro_f1_std"]), float(rnd["test_macro_f1_std"]))
            if not math.isnan(spread):  # one seed has no spread to compare with
                line += (f"; {'larger' if abs(d) > spread else 'not larger'} than the seed spread, "
                         f"std up to {spread:.1f}")
            line += ")"
        out.append(line)
    return out


def write_report(workdir: str, out: str | None = None, embeddings: bool = True, max_points: int = 400,
                 store: str | None = None) -> list[str]:
    """Writes everything; returns the written paths. Sections without data are left out."""
    out = os.path.abspath(out or workdir)
    pdir = os.path.join(out, "plots")
    os.makedirs(pdir, exist_ok=True)
    rows, summary, paths = tables.write_tables(workdir, out)
    classes = rows[0]["_classes"] if rows else []
    md = [f"# Results: {os.path.basename(os.path.abspath(workdir))}", "",
          f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {len(rows)} finished evaluation runs under "
          f"`{os.path.abspath(workdir)}`.", ""]
    figs: list[tuple[str, str]] = []
    if summary:
        md += ["## Test macro-F1 (%)", "",
               "Mean ± sample std (ddof=1) over seeds; n = number of seeds. Model selection on validation "
               "macro-F1; the test split is scored once with the selected model.", "",
               tables.markdown_table(summary), ""]
        md += highlights(summary) + [""]
        paired = tables.paired_table(rows)
        if paired:
            md += ["## Paired comparison with random initialisation", "",
                   "Per seed (same label subset and split), init minus random in test macro-F1 points, averaged "
                   "over seeds; in brackets the seeds on which the init is ahead.", "", paired, ""]
        pts = patients_curve.points(rows)
        if pts:
            md += ["## SSL gain vs number of pretraining patients", "",
                   "Same number of pretraining frames for every point; the gain is paired per seed.", "",
                   patients_curve.markdown(pts), ""]
            figs.append(("SSL gain vs number of pretraining patients",
                         patients_curve.plot(pts, os.path.join(pdir, "gain_vs_patients.png"))))
        md += ["## Test accuracy (%)", "", tables.markdown_table(summary, "test_accuracy"), "",
               "## Test balanced accuracy (%)", "", tables.markdown_table(summary, "test_balanced_accuracy"), ""]
        figs.append(("Macro-F1 vs label fraction", plots.f1_vs_fraction(summary, os.path.join(pdir,
                                                                                            "f1_vs_fraction.png"))))
        if classes:
            figs.append(("Per-class F1", plots.per_class_heatmap(summary, classes,
                                                                 os.path.join(pdir, "per_class_f1.png"))))
            for prot in sorted({r["protocol"] for r in rows}):
                for f in sorted({float(r["fraction"]) for r in rows if r["protocol"] == prot}):
                    p = plots.confusion_grid(rows, prot, f, classes,
                                             os.path.join(pdir, f"confusion_{prot}_f{f:g}.png"))
                    if p:
                        figs.append((f"Confusion matrices: {prot}, {f:g}% labels", p))
    curves = _pretrain_runs(workdir)
    if curves:
        md += ["## Pretraining runs", "",
               "Last logged values. RankMe (effective rank, Garrido et al. 2023) over the last "
               "`train.rankme_samples` embeddings of the run; a collapsed encoder shows a RankMe near 1 and a "
               "std near 0. kNN val F1: the periodic evaluator's last value (`monitor.every`).", "",
               pretraining.markdown(pretraining.summary(curves)), ""]
    for label, rows_ in curves.items():
        figs.append((f"SSL training curves: {label}",
                     plots.training_curves(rows_, label, os.path.join(pdir, f"ssl_curves_{_safe(label)}.png"))))
    if len(curves) > 1:
        figs.append(("SSL collapse monitors, all methods",
                     plots.monitors_overlay(curves, os.path.join(pdir, "ssl_monitors.png"))))
    if embeddings:
        from fetal_ssl_jax.report import embeddings as emb
        encoders = emb.find_encoders(workdir)
        store = store or next((r.get("_store") for r in rows if r.get("_store")), None)
        if encoders and store and os.path.exists(store):
            maps, cls = emb.compute_maps(encoders, store, max_points)
            figs.append(("Embedding maps (t-SNE of frozen test-set features)",
                         plots.embedding_maps(maps, cls, os.path.join(pdir, "embeddings_tsne.png"))))
    for title, p in figs:
        md += [f"## {title}", "", f"![{title}]({os.path.relpath(p, out)})", ""]
    report = os.path.join(out, "report.md")
    with open(report, "w") as f:
        f.write("\n".join(md))
    return [report] + paths + [p for _, p in figs]


def _pretrain_runs(root: str) -> dict[str, list[dict[str, Any]]]:
    """Label -> metrics.jsonl rows of every pretraining workdir under ``root``."""
    import json
    out: dict[str, list[dict[str, Any]]] = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in ("checkpoints", "features", "selected", "logs", "encoder"))
        if "metrics.jsonl" not in files or "metrics.json" in files or _is_evaluation(d):
            continue  # fine-tunes also log metrics.jsonl (metrics.json once finished; a protocol in their config)
        label = os.path.basename(d)
        meta = os.path.join(d, "encoder", "encoder.json")
        if os.path.exists(meta):
            with open(meta) as f:
                label = json.load(f).get("method", label)
        sj = os.path.join(d, "sweep_job.json")
        if os.path.exists(sj):
            with open(sj) as f:
                label = json.load(f).get("init", label)
        rows = plots.read_jsonl(os.path.join(d, "metrics.jsonl"))
        if rows and label not in ("supervised",):
            out[label] = rows
    return dict(sorted(out.items()))


def _is_evaluation(workdir: str) -> bool:
    """An evaluation run (its config names a protocol), e.g. a fine-tune still running."""
    import json
    for name in ("config.json", "sweep_job.json"):
        try:
            with open(os.path.join(workdir, name)) as f:
                if "protocol" in json.load(f):
                    return True
        except (OSError, ValueError):
            continue
    return False


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
