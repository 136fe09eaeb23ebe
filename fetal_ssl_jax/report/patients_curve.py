"""The variance-vs-size answer: SSL gain over random initialisation against the number of distinct patients
the (fixed number of) pretraining frames come from.

Encoders of such a study are labelled ``<method>@p<N>`` (configs/variance_vs_size.py: frame set pNN = the
same videos x frames from N patients). The gain is paired per seed (same label subset, same split) and
averaged over seeds; its spread is the std of the paired differences.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np

from fetal_ssl_jax.report import tables

LABEL = re.compile(r"^(?P<method>.+)@p(?P<patients>\d+)$")


def points(rows: Sequence[dict[str, Any]], baseline: str = "random", metric: str = "test_macro_f1"
           ) -> list[dict[str, Any]]:
    """One point per (method, protocol, fraction, patients): gain mean/std in F1 points, n seeds, F1 mean."""
    diffs = tables.paired_differences(rows, baseline, metric)
    f1: dict[tuple, list[float]] = {}
    for r in rows:
        f1.setdefault((r["init"], r["protocol"], float(r["fraction"])), []).append(float(r.get(metric, math.nan)))
    out = []
    for (init, prot, frac), d in diffs.items():
        m = LABEL.match(str(init))
        if not m:
            continue
        d = np.asarray(d, np.float64) * 100
        out.append(dict(method=m["method"], patients=int(m["patients"]), protocol=prot, fraction=frac,
                        gain=float(d.mean()), gain_std=float(d.std(ddof=1)) if d.size > 1 else math.nan,
                        n=int(d.size), ahead=int((d > 0).sum()),
                        f1=100 * float(np.nanmean(f1[(init, prot, frac)])),
                        baseline_f1=100 * float(np.nanmean(f1.get((baseline, prot, frac), [math.nan])))))
    return sorted(out, key=lambda p: (p["method"], p["protocol"], p["fraction"], p["patients"]))


def markdown(pts: Sequence[dict[str, Any]]) -> str:
    settings = sorted({(p["method"], p["protocol"], p["fraction"]) for p in pts})
    counts = sorted({p["patients"] for p in pts})
    at = {(p["method"], p["protocol"], p["fraction"], p["patients"]): p for p in pts}
    lines = ["| gain over random (F1 points) | " + " | ".join(f"{n} patients" for n in counts) + " |",
             "|" + "---|" * (len(counts) + 1)]
    for s in settings:
        cells = []
        for n in counts:
            p = at.get((*s, n))
            cells.append("" if p is None else f"{p['gain']:+.1f}" + ("" if math.isnan(p["gain_std"]) else
                                                                   f" ± {p['gain_std']:.1f}") + f" ({p['ahead']}/{p['n']})")
        lines.append(f"| {s[0]}, {s[1]} {s[2]:g}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(pts: Sequence[dict[str, Any]], path: str) -> str:
    """Gain (F1 points, paired per seed, error bar = std over seeds) against patients (log x), one line per
    method x protocol x fraction; the zero line is random initialisation."""
    from fetal_ssl_jax.report import plots
    plt = plots._plt()
    settings = sorted({(p["method"], p["protocol"], p["fraction"]) for p in pts})
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in settings:
        ps = [p for p in pts if (p["method"], p["protocol"], p["fraction"]) == s]
        x = [p["patients"] for p in ps]
        y = [p["gain"] for p in ps]
        e = [0.0 if math.isnan(p["gain_std"]) else p["gain_std"] for p in ps]
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=f"{s[0]}, {s[1]} {s[2]:g}%")
    ax.axhline(0.0, color="0.45", lw=1, ls="--", label="random init")
    ax.set_xscale("log", base=2)
    counts = sorted({p["patients"] for p in pts})
    ax.set_xticks(counts)
    ax.set_xticklabels([str(c) for c in counts])
    ax.set_xlabel("distinct patients in the pretraining frames (same number of frames)")
    ax.set_ylabel("test macro-F1 gain over random init (points)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
