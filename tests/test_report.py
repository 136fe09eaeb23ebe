"""Report from synthetic runs: mean ± std per setting over seeds, CSV/markdown, and every PNG."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from fetal_ssl_jax.report import cli, tables

CLASSES = ["4CH", "LVOT", "RVOT", "3VV", "3VT"]


def _metrics(init, protocol, fraction, seed, f1):
    cm = np.diag([5, 4, 3, 3, 2]).tolist()
    block = dict(macro_f1=f1, accuracy=f1 + 0.05, balanced_accuracy=f1 - 0.01, num_samples=17,
                 per_class_f1={c: f1 + 0.01 * i for i, c in enumerate(CLASSES)}, confusion_matrix=cm)
    return dict(protocol=protocol, init_method=init, init=dict(kind="ssl", source="/x"), fraction=fraction,
                seed=seed, classes=CLASSES, config_hash="abc", code_version="v", store="/nonexistent",
                val=dict(block, macro_f1=f1 - 0.02), test=block)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    rng = np.random.default_rng(0)
    expected = {}
    for init in ("barlowtwins", "random"):
        for protocol in ("probe", "finetune"):
            for fraction in (1.0, 10.0, 100.0):
                vals = rng.uniform(0.2, 0.9, 3)
                expected[(init, protocol, fraction)] = vals
                for seed, v in enumerate(vals):
                    d = os.path.join(root, "eval", protocol, init, f"f{fraction:g}", f"s{seed}")
                    os.makedirs(d)
                    json.dump(_metrics(init, protocol, fraction, seed, float(v)), open(os.path.join(d,
                                                                                                  "metrics.json"), "w"))
    # a sweep label overrides the init method (variance-vs-size encoders share a method)
    d = os.path.join(root, "eval", "probe", "bt_size", "f1", "s0")
    os.makedirs(d)
    json.dump(_metrics("barlowtwins", "probe", 1.0, 0, 0.5), open(os.path.join(d, "metrics.json"), "w"))
    json.dump(dict(init="barlowtwins@size"), open(os.path.join(d, "sweep_job.json"), "w"))
    # a pretraining run: metrics.jsonl (curves), no metrics.json
    for method in ("barlowtwins", "simclr"):
        pd = os.path.join(root, "pretrain", method)
        os.makedirs(pd)
        with open(os.path.join(pd, "metrics.jsonl"), "w") as f:
            for s in range(1, 21):
                f.write(json.dumps(dict(step=s, loss=10 / s, on_diag=5 / s, off_diag=1 / s, lr=0.1,
                                        embedding_std=0.1, rankme=10 + s)) + "\n")
            f.write('{"step": 21, "loss"')  # a line cut by a kill is ignored
    return root, expected


def test_tables_mean_and_sample_std_per_setting(tree):
    root, expected = tree
    rows, summary, paths = tables.write_tables(root, root)
    assert len(rows) == 2 * 2 * 3 * 3 + 1
    by = {(s["init"], s["protocol"], s["fraction"]): s for s in summary}
    for key, vals in expected.items():
        s = by[key]
        assert s["n"] == 3 and s["seeds"] == "0 1 2"
        assert s["test_macro_f1_mean"] == pytest.approx(vals.mean())
        assert s["test_macro_f1_std"] == pytest.approx(vals.std(ddof=1))
        assert s["test_f1_3VT_mean"] == pytest.approx(vals.mean() + 0.04)
    one = by[("barlowtwins@size", "probe", 1.0)]
    assert one["n"] == 1 and np.isnan(one["test_macro_f1_std"])
    with open(os.path.join(root, "results.csv")) as f:
        csv_rows = list(csv.DictReader(f))
    r = next(r for r in csv_rows if r["init"] == "random" and r["protocol"] == "finetune" and r["fraction"] == "10")
    assert float(r["test_macro_f1_mean"]) == pytest.approx(expected[("random", "finetune", 10.0)].mean(), rel=1e-5)
    v = expected[("barlowtwins", "probe", 1.0)]
    md = tables.markdown_table(summary)
    assert f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1):.1f} (n=3)" in md
    assert json.load(open(os.path.join(root, "results.json")))  # NaN-free JSON


def test_report_writes_markdown_and_plots(tree, tmp_path):
    root, _ = tree
    paths = cli.write_report(root, str(tmp_path), embeddings=False)
    names = {os.path.basename(p) for p in paths}
    for n in ("report.md", "results.csv", "runs.csv", "f1_vs_fraction.png", "per_class_f1.png",
              "confusion_probe_f1.png", "confusion_finetune_f100.png", "ssl_curves_barlowtwins.png",
              "ssl_curves_simclr.png", "ssl_monitors.png"):
        assert n in names, n
    for p in paths:
        assert os.path.getsize(p) > 200, p
        if p.endswith(".png"):
            assert open(p, "rb").read(4) == b"\x89PNG"
    md = open(os.path.join(tmp_path, "report.md")).read()
    assert "## Test macro-F1 (%)" in md and "![Macro-F1 vs label fraction](plots/f1_vs_fraction.png)" in md
    assert "barlowtwins@size" in md and "F1 points" in md


def test_highlight_says_whether_the_margin_beats_the_seed_spread():
    from fetal_ssl_jax.report.cli import highlights
    row = lambda init, m, sd, frac=1.0: dict(protocol="probe", init=init, fraction=frac,
                                              test_macro_f1_mean=m, test_macro_f1_std=sd)
    big = highlights([row("barlowtwins", 0.386, 0.039), row("random", 0.299, 0.047), row("random", 0.5, 0.0, 10.0)])
    assert len(big) == 1 and "1% labels" in big[0]
    assert "+8.7 F1 points; larger than the seed spread, std up to 4.7" in big[0]
    small = highlights([row("barlowtwins", 0.479, 0.063), row("random", 0.416, 0.033)])
    assert "+6.3 F1 points; not larger than the seed spread, std up to 6.3" in small[0]
    one_seed = highlights([row("barlowtwins", 0.4, float("nan")), row("random", 0.3, float("nan"))])
    assert one_seed[0].endswith("(+10.0 F1 points)")


def test_paired_table_and_best_marked(tree):
    root, expected = tree
    rows = tables.collect(root)
    diffs = tables.paired_differences(rows)
    bt, rnd = expected[("barlowtwins", "probe", 10.0)], expected[("random", "probe", 10.0)]
    np.testing.assert_allclose(diffs[("barlowtwins", "probe", 10.0)], bt - rnd)
    assert diffs[("barlowtwins@size", "probe", 1.0)] == pytest.approx([0.5 - expected[("random", "probe", 1.0)][0]])
    md = tables.paired_table(rows)
    assert f"{100 * (bt - rnd).mean():+.1f} ({int((bt > rnd).sum())}/3)" in md
    best = tables.markdown_table(tables.summarize(rows)).splitlines()
    col = [l for l in best if l.startswith("| barlowtwins |") or l.startswith("| random |")]
    winner = "barlowtwins" if bt.mean() > rnd.mean() else "random"
    i = [h.strip() for h in best[0].split("|")].index("probe 10%")
    cells = {l.split("|")[1].strip(): l.split("|")[i].strip() for l in col}
    loser = "random" if winner == "barlowtwins" else "barlowtwins"
    assert cells[winner].startswith("**") and not cells[loser].startswith("**")


def test_gain_vs_patients_curve_and_pretraining_summary(tmp_path):
    from fetal_ssl_jax.report import patients_curve, pretraining
    rows = []
    for seed in range(3):
        rows.append(dict(init="random", protocol="probe", fraction=1.0, seed=seed, test_macro_f1=0.30 + 0.01 * seed))
        for n, gain in ((1, 0.02), (4, 0.05), (32, 0.03)):
            rows.append(dict(init=f"barlowtwins@p{n:02d}", protocol="probe", fraction=1.0, seed=seed,
                             test_macro_f1=0.30 + 0.01 * seed + gain + 0.01 * (seed - 1)))
    pts = patients_curve.points(rows)
    assert [p["patients"] for p in pts] == [1, 4, 32]
    assert [round(p["gain"], 6) for p in pts] == [2.0, 5.0, 3.0]
    assert all(p["gain_std"] == pytest.approx(1.0) and p["n"] == 3 for p in pts)
    assert "+5.0 ± 1.0 (3/3)" in patients_curve.markdown(pts)
    assert open(patients_curve.plot(pts, str(tmp_path / "g.png")), "rb").read(4) == b"\x89PNG"
    curve = [dict(step=s, loss=1.0 / s, rankme=900.0, rankme_feat=200.0, embedding_std=0.03, time=float(s))
             for s in range(1, 11)]
    curve += [dict(step=s, loss=0.1, time=float(s - 10)) for s in range(11, 16)]  # resumed: time restarts
    row = pretraining.summary({"bt": curve})[0]
    assert row["steps"] == 15 and row["seconds"] == pytest.approx(15.0) and row["rankme"] == 900.0
    assert "| bt | 15 | 0.2 | 0.1 | 900 | 200 | 0.030 |" in pretraining.markdown([row])
