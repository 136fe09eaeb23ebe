"""Monitors while pretraining (issue 19): RankMe over an accumulated set of embeddings, and the periodic kNN
evaluator, which must log knn_val_f1 without changing training (same final parameters as without it)."""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from fetal_ssl_jax import configuration, monitors
from fetal_ssl_jax.evaluate import monitor as knn_monitor
from fetal_ssl_jax.train.pretrain import pretrain

from engine_helpers import TINY_BT_ARGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _equal_singular_values(n: int, d: int, r: int, seed: int = 0) -> np.ndarray:
    """[n, d] rows of rank r with r equal singular values: RankMe exactly r."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, r)))
    v, _ = np.linalg.qr(rng.normal(size=(d, r)))
    return (u @ v.T).astype(np.float32)


def test_rankme_buffer_accumulates_beyond_one_batch():
    """48-rank data fed 32 rows a step: the buffer's RankMe is ~48, more than a step's 32 rows could give."""
    z = _equal_singular_values(2048, 96, 48)
    buf = monitors.RankMeBuffer(2048, 32)
    for i, s in enumerate(range(0, 2048, 32)):
        assert buf.compute() == {} and not buf.full  # not full yet: nothing
        buf.add(z[s:s + 32], 2 * z[s:s + 32])
    assert buf.full
    out = buf.compute()
    assert float(out["rankme"]) == pytest.approx(48, rel=1e-3)
    assert float(out["rankme_feat"]) == pytest.approx(48, rel=1e-3)
    assert float(monitors.rankme(z[:32])) <= 32 + 1e-3  # one batch: capped at its row count
    # a ring buffer: older rows fall out; rows of rank 4 replace them all
    low = _equal_singular_values(2048, 96, 4, seed=1)
    for s in range(0, 2048, 32):
        buf.add(low[s:s + 32], low[s:s + 32])
    assert float(buf.compute()["rankme"]) == pytest.approx(4, rel=1e-3)


@pytest.mark.parametrize("n,d", [(300, 64), (40, 96)])
def test_rankme_of_rows_equals_rankme(n, d):
    """The Gram-matrix route (either side) gives the SVD's RankMe."""
    z = np.random.default_rng(n).normal(size=(n, d)).astype(np.float32) * np.linspace(0.01, 3, d, dtype=np.float32)
    chunks = [z[s:s + 32] for s in range(0, n, 32)]
    assert monitors.rankme_of_rows(chunks) == pytest.approx(float(monitors.rankme(z)), rel=1e-4)
    assert float(monitors._rankme_gram_device(chunks)) == pytest.approx(float(monitors.rankme(z)), rel=1e-3)


def test_rows_per_step():
    assert monitors.RankMeBuffer.rows_per_step(2048, 50, 256) == 41  # 2048 rows over a rankme_every interval
    assert monitors.RankMeBuffer.rows_per_step(2048, 50, 16) == 16   # capped at the batch
    assert monitors.RankMeBuffer.rows_per_step(32, 3, 16) == 11


def test_stratified_cap_is_balanced_and_deterministic():
    labels = np.array([0] * 100 + [1] * 10 + [2] * 50)
    a = knn_monitor.stratified_cap(labels, 30, seed=0)
    assert len(a) == 30 and np.all(np.diff(a) > 0)
    assert np.bincount(labels[a]).tolist() == [10, 10, 10]
    np.testing.assert_array_equal(a, knn_monitor.stratified_cap(labels, 30, seed=0))
    assert len(knn_monitor.stratified_cap(labels, 1000)) == len(labels)


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory):
    from fetal_ssl_jax import phantom
    from fetal_ssl_jax.data.synthetic_store import simulate_store
    root = str(tmp_path_factory.mktemp("labelled"))
    phantom.generate(root + "/export", preset="tiny", seed=0, images=150, labelled_patients=12)
    return simulate_store(root, size=32)


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_knn_monitor_logs_and_leaves_training_unchanged(labelled_store, tmp_path):
    """Tiny BarlowTwins, the first 6 of the CLI tests' 12 steps (engine_helpers.TINY_BT_ARGS: the same compiled
    step): with the kNN monitor every 3 steps (run stopped after step 4 and resumed) the parameters at step 6
    equal those of a run without it; knn_val_f1 is logged at steps 3 and 6; RankMe over the accumulated 32
    projector rows (11 a step) exceeds the 16-row batch."""
    base = [*TINY_BT_ARGS, "--config.train.ckpt_every=3"]

    def cfg(extra):
        return configuration.load(os.path.join(ROOT, "configs", "barlowtwins.py:tiny"), base + extra)

    off = pretrain(cfg([]), str(tmp_path / "off"), stop_after=6)
    on_dir = str(tmp_path / "on")
    on_args = ["--config.monitor.every=3", f"--config.monitor.labelled_store={labelled_store}",
               "--config.monitor.max_train=60", "--config.monitor.max_val=40", "--config.monitor.batch_size=32"]
    with pytest.raises(ValueError, match="no monitors"):
        pretrain(cfg(on_args), on_dir)
    pretrain(cfg(on_args), on_dir, stop_after=4, make_monitors=knn_monitor.make_monitors)
    on = pretrain(cfg(on_args), on_dir, stop_after=6, make_monitors=knn_monitor.make_monitors)  # resumed from 3
    assert on.resumed_from == 3 and off.step == on.step == 6
    for a, b in zip(jax.tree.leaves(jax.device_get(off.state.params)), jax.tree.leaves(jax.device_get(on.state.params))):
        np.testing.assert_array_equal(a, b)

    rows = _rows(on_dir)
    knn = {r["step"]: r["knn_val_f1"] for r in rows if "knn_val_f1" in r}
    assert set(knn) == {3, 6} and all(0 <= v <= 1 for v in knn.values())
    assert all(0 <= r["knn_val_acc"] <= 1 for r in rows if "knn_val_acc" in r)
    assert not any("knn_val_f1" in r for r in _rows(str(tmp_path / "off")))
    rank = [r["rankme"] for r in rows if "rankme" in r]
    feat = [r["rankme_feat"] for r in rows if "rankme_feat" in r]
    assert max(rank) > 16  # more than one batch's 16 rows allow (64-wide projector)
    assert feat and all(v > 1 for v in feat)  # a random tiny backbone's 64 features: low but measured


def test_report_plots_knn_curve(tmp_path):
    from fetal_ssl_jax.report import plots
    rows = [dict(step=s, loss=1.0 / s, rankme=10.0 + s, rankme_feat=20.0 + s, lr=0.1) for s in range(1, 11)]
    for r in rows[2::3]:
        r.update(knn_val_f1=0.1 * r["step"] / 10, knn_val_acc=0.5, knn_seconds=0.2)
    assert os.path.exists(plots.training_curves(rows, "bt", str(tmp_path / "c.png")))
    assert os.path.exists(plots.monitors_overlay({"bt": rows, "simclr": rows}, str(tmp_path / "o.png")))
    # knn_* and rankme_feat are monitors, not loss components
    assert {"knn_val_f1", "knn_val_acc", "knn_seconds", "rankme_feat"} <= plots.MONITORS
