"""Labelled store: CSV checks, patient splits, nested fractions, fixed class indices, inspect, TFDS."""
import csv
import json
import os

import numpy as np
import pytest

from data_prep import cli, inspect_store
from fetal_ssl_jax.data import splits
from data_prep import sample_media as sm
from fetal_ssl_jax.data import records
from fetal_ssl_jax.data.labelled_store import DEFAULT_CLASSES, LabelledStore

H, W = 48, 64


def _export(root, n_patients=24, seed=0):
    """images/<patient>_<n>.png (8/16-bit, gray/RGB), unbalanced classes, 3VT absent; plus bad rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for n in range(int(rng.integers(2, 6))):
            cls = ["4CH", "4CH", "4CH", "LVOT", "RVOT", "3VV"][int(rng.integers(0, 6))]
            img = sm.fan_frames(1, H, W, seed=100 * p + n, rgb=bool(n % 2))[0]
            name = f"images/P{p:02d}_{n}.png"
            sm.write_png(os.path.join(root, name), img, bits=16 if (n == 2 and img.ndim == 2) else 8)
            rows.append([name, cls, f"P{p:02d}"])
    bad = [["images/missing.png", "4CH", "P00"], [rows[0][0], "NOTAPLANE", "P00"], list(rows[1]),
           ["images/broken.png", "LVOT", "P01"], ["images/P00_0.png".replace("P00_0", "P01_0"), "RVOT", ""]]
    with open(os.path.join(root, "images", "broken.png"), "wb") as f:
        f.write(b"not a png at all")
    with open(os.path.join(root, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "class", "patient_id", "note"])
        for r in rows[:3] + bad + rows[3:]:
            w.writerow(r + ["x"])
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("export"))
    rows = _export(root)
    out = os.path.join(root, "store")
    rc = cli.main(["images", "--csv", os.path.join(root, "labels.csv"), "--out", out, "--size", "32",
                   "--seed", "0", "1", "--fractions", "1,10,50,100", "--workers", "2", "--quiet"])
    assert rc == 0
    return root, out, rows


def test_store_layout_and_bad_rows(store):
    root, out, rows = store
    ls = LabelledStore.open(out)
    assert ls.classes == list(DEFAULT_CLASSES)  # 3VT absent, indices unchanged
    m = ls.manifest
    reasons = [s["reason"] for s in m["skipped"]]
    assert any(r.startswith("missing file") for r in reasons)
    assert any(r.startswith("unknown class 'NOTAPLANE'") for r in reasons)
    assert any(r.startswith("duplicate of line") for r in reasons)
    assert any(r.startswith("unreadable image") for r in reasons)
    assert any(r == "empty patient_id" for r in reasons)
    assert len(m["skipped"]) == 5 and all("line" in s for s in m["skipped"])
    assert sum(m["num_images"].values()) == len(rows)
    assert any("3VT" in w for w in m["warnings"])
    label_of = {r[0]: DEFAULT_CLASSES.index(r[1]) for r in rows}
    for s in splits.SPLITS:
        imgs, labels = ls.load_split(s)
        assert imgs.shape[1:] == (32, 32) and imgs.dtype == np.uint8
        src = ls.source(s)
        for i in range(len(src)):
            rec = records.unpack(src[i])
            assert rec["label"] == label_of[rec["image_id"]] == labels[i]
            assert rec["class_name"] == DEFAULT_CLASSES[rec["label"]]


def test_patient_splits_are_disjoint_and_cover(store):
    root, out, rows = store
    sp = json.load(open(os.path.join(out, "splits.json")))
    sets = [set(sp[s]) for s in splits.SPLITS]
    assert all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:])
    assert set().union(*sets) == {r[2] for r in rows}
    assert all(sets)  # enough patients: every split has some
    ls = LabelledStore.open(out)
    for s in splits.SPLITS:
        src = ls.source(s)
        assert {records.unpack(src[i])["patient_id"] for i in range(len(src))} <= set(sp[s])


def test_fractions_nested_stratified_reproducible(store):
    root, out, rows = store
    ls = LabelledStore.open(out)
    _, y = ls.load_split("train")
    present = set(y.tolist())
    for seed in (0, 1):
        subsets = [set(ls.subset_indices(f, seed).tolist()) for f in (1, 10, 50, 100)]
        assert all(a <= b for a, b in zip(subsets, subsets[1:]))
        assert subsets[-1] == set(range(len(y)))
        for sub in subsets:
            assert {int(y[i]) for i in sub} == present  # >= 1 image per class present in train
        for c in present:  # stratified: each class near its share
            n_c = int((y == c).sum())
            assert len([i for i in subsets[2] if y[i] == c]) == max(1, round(0.5 * n_c))
    assert ls.subset_indices(10, 0).tolist() != ls.subset_indices(50, 1).tolist()
    again = splits.nested_fractions(y.tolist(), (1, 10, 50, 100), 1, 5)
    assert again == ls.fractions["1"]


def test_split_function_properties():
    rng = np.random.default_rng(7)
    patients = [f"p{int(i)}" for i in rng.integers(0, 60, 600)]
    labels = [int(v) for v in rng.choice(5, 600, p=[0.5, 0.2, 0.15, 0.1, 0.05])]
    a = splits.split_patients(patients, labels, 5, 0.15, 0.15, seed=3)
    assert a == splits.split_patients(patients, labels, 5, 0.15, 0.15, seed=3)
    assert a != splits.split_patients(patients, labels, 5, 0.15, 0.15, seed=4)
    where = {p: s for s, ps in a.items() for p in ps}
    y = np.array(labels)
    for s, frac in (("val", 0.15), ("test", 0.15), ("train", 0.7)):
        mask = np.array([where[p] == s for p in patients])
        assert abs(mask.mean() - frac) < 0.06
        assert set(y[mask].tolist()) == set(range(5))  # stratified: every class reaches every split


def test_rerun_is_up_to_date_and_strict(store, capsys):
    root, out, _ = store
    before = open(os.path.join(out, "train.array_record"), "rb").read()
    args = ["images", "--csv", os.path.join(root, "labels.csv"), "--out", out, "--size", "32", "--seed", "0", "1",
            "--fractions", "1,10,50,100", "--workers", "0", "--quiet"]
    assert cli.main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli.main(args + ["--strict"]) == 1
    assert cli.main(args + ["--force"]) == 0
    assert open(os.path.join(out, "train.array_record"), "rb").read() == before  # deterministic


def test_inspect_writes_contact_sheets(store, tmp_path, capsys):
    import argparse
    root, out, _ = store
    p = argparse.ArgumentParser()
    inspect_store.add_arguments(p)
    assert inspect_store.run(p.parse_args([out, "--sheet", str(tmp_path / "planes.png")])) == 0
    text = capsys.readouterr().out
    assert "labelled store" in text and "fractions seed 0" in text
    from PIL import Image
    assert Image.open(tmp_path / "planes.png").size[0] > 100


def test_tfds_builders_without_tensorflow(store, tmp_path, monkeypatch):
    import sys
    import tempfile
    import tensorflow_datasets as tfds
    # TFDS makes a temporary folder for GCS metadata in every builder's constructor and leaves it behind
    # (GCS is off): keep those inside this test's folder, not in the machine's /tmp.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    from data_prep.tfds import FetalFrames, FetalPlanes
    root, _, rows = store
    dl = tfds.download.DownloadConfig(manual_dir=root)
    b = FetalPlanes(config="s64", data_dir=str(tmp_path / "tfds"), file_format="array_record")
    b.download_and_prepare(download_config=dl)
    ds = b.as_data_source()
    n = sum(len(ds[s]) for s in ds)
    assert n == len(rows)
    ex = ds["train"][0]
    assert ex["image"].shape == (64, 64, 1) and 0 <= ex["label"] < 5
    assert "0" in b.info.metadata["fractions"]
    vids = tmp_path / "vids" / "P1"
    vids.mkdir(parents=True)
    sm.write_video(str(vids / "a.mp4"), sm.fan_frames(12, H, W, seed=1))
    fb = FetalFrames(config="s64", data_dir=str(tmp_path / "tfds"), file_format="array_record")
    fb.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "vids")))
    tr = fb.as_data_source()["train"]
    assert len(tr) == 3 and [int(tr[i]["frame_index"]) for i in range(3)] == [0, 5, 10]
    assert "tensorflow" not in sys.modules


def test_rebuild_of_a_store_in_use_is_refused(store, capsys):
    from fetal_ssl_jax.workdir_lock import WorkdirLock
    root, out, _ = store
    before = open(os.path.join(out, "train.array_record"), "rb").read()
    args = ["images", "--csv", os.path.join(root, "labels.csv"), "--out", out, "--size", "32", "--seed", "0", "1",
            "--fractions", "1,10,50,100", "--workers", "0", "--quiet", "--force"]
    with WorkdirLock(out, "another prepare images"):
        assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "is in use by pid" in err and str(os.getpid()) in err
    assert open(os.path.join(out, "train.array_record"), "rb").read() == before
    assert cli.main(args) == 0  # the lock is free again
