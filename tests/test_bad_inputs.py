"""Bad-input catalogue (issue 8): malformed inputs across the CLIs, one table per kind of input.

Every row names an input and what is wrong with it; the test checks that the command says so
in a message that names the input and the problem (never a traceback), exits non-zero where
the whole command cannot go on, and, for data files, skips the file, goes on with the rest and
lists what it skipped in a summary at the end.

Everything runs in this process through ``launch.main`` (config errors are caught before any
data is built or anything is compiled), apart from nothing: no subprocess, no JAX compile.

Also covered elsewhere (not repeated here): the manifest's skip reasons and ``--strict`` in
tests/test_data_prep_frames.py::test_bad_files_are_reported_and_strict, the labelled store's
skip reasons in tests/test_data_prep_images.py::test_store_layout_and_bad_rows, a busy workdir
and a NaN in tests/test_engine_cli.py.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import launch
from data_prep import sample_media as sm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 48, 64


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = launch.main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def _assert_clear(err: str, *fragments: str) -> None:
    assert "Traceback" not in err, err[-3000:]
    for f in fragments:
        assert f in err, f"{f!r} not in:\n{err[-3000:]}"


# ------------------------------------------------------------------ media files for `prepare frames`

def _zero_frame_avi(path):
    import av
    with av.open(path, "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        c.start_encoding()


def _media(d):
    good = sm.fan_frames(8, H, W, seed=5)
    sm.write_video(os.path.join(d, "good.mp4"), good)
    data = open(os.path.join(d, "good.mp4"), "rb").read()

    def truncated(p):
        open(p, "wb").write(data[: len(data) // 2])

    def corrupt(p):
        open(p, "wb").write(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(4000))

    def wrong_ext(p):
        sm.write_png(p + ".png", good[0])
        os.replace(p + ".png", p)

    def dicom_mpeg2(p):
        import pydicom
        sm.write_dicom(p, good, "jpeg")
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2: no decoder installed
        ds.save_as(p)

    def dicom_argb(p):
        import pydicom
        sm.write_dicom(p, good, "raw")
        ds = pydicom.dcmread(p)
        ds.PhotometricInterpretation = "ARGB"
        ds.save_as(p)

    def bad_member(p):
        os.makedirs(p)
        for i in range(3):
            sm.write_png(os.path.join(p, f"f_{i}.png"), good[i])
        open(os.path.join(p, "f_3.png"), "wb").write(b"\x89PNG\r\n\x1a\n garbage")

    def size_change(p):
        os.makedirs(p)
        for i in range(3):
            sm.write_png(os.path.join(p, f"f_{i}.png"), good[i])
        sm.write_png(os.path.join(p, "f_3.png"), sm.fan_frames(1, H + 8, W, seed=1)[0])

    return {  # kind: (file, how to make it, expected reason)
        "corrupt video": ("corrupt.mp4", corrupt, "cannot open video"),
        "truncated video": ("truncated.mp4", truncated, ("cannot open video", "decode error")),
        "zero-frame video": ("zero.avi", _zero_frame_avi, "zero frames"),
        "empty file": ("empty.mov", lambda p: open(p, "wb").close(), "empty file (0 bytes)"),
        "wrong extension": ("picture.mp4", wrong_ext, "wrong extension"),
        "DICOM without pixel data": ("nopix.dcm", lambda p: sm.write_dicom(p, good, "raw", pixel_data=False),
                                     "no pixel data"),
        "DICOM with unsupported transfer syntax": ("mpeg2.dcm", dicom_mpeg2, "unsupported transfer syntax"),
        "DICOM with an unknown photometric interpretation": ("argb.dcm", dicom_argb,
                                                             "unsupported photometric interpretation 'ARGB'"),
        "not DICOM despite .dcm": ("notes.dcm", lambda p: open(p, "w").write("scan notes, not an image\n" * 20),
                                   "not a readable DICOM file"),
        "HDF5 without a frame stack": ("table.h5", lambda p: sm.write_hdf5(p, {"t": np.zeros((5,), np.uint8)}),
                                       "no frame-stack dataset"),
        "HDF5 with zero frames": ("zero.h5", lambda p: sm.write_hdf5(p, {"v": np.zeros((0, H, W), np.uint8)}),
                                  "zero frames"),
        "unreadable PNG in a sequence": ("seq", bad_member, "unreadable image"),
        "frame size change in a sequence": ("seq2", size_change, "frame size changed mid-clip"),
    }


@pytest.fixture(scope="module")
def frames_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_media")
    d = os.path.join(root, "src", "P1")
    os.makedirs(d)
    table = _media(d)
    for name, (fname, make, _) in table.items():
        make(os.path.join(d, fname))
    store = os.path.join(root, "store")
    rc, out, err = _run(["prepare", "frames", "--src", os.path.join(root, "src"), "--out", store, "--size", "32",
                         "--stride", "1", "--workers", "0", "--quiet"])
    return table, store, rc, out, err


MEDIA_KINDS = ["corrupt video", "truncated video", "zero-frame video", "empty file", "wrong extension",
               "DICOM without pixel data", "DICOM with unsupported transfer syntax",
               "DICOM with an unknown photometric interpretation", "not DICOM despite .dcm",
               "HDF5 without a frame stack", "HDF5 with zero frames", "unreadable PNG in a sequence", "frame size change in a sequence"]


@pytest.mark.parametrize("kind", MEDIA_KINDS)
def test_bad_media_file_is_skipped_and_reported(frames_run, kind):
    table, store, rc, out, err = frames_run
    fname, _, reason = table[kind]
    assert rc == 0, err  # the good video is converted; bad files never stop the run
    m = json.load(open(os.path.join(store, "manifest.json")))
    why = {s["file"]: s["reason"] for s in m["skipped"]}
    hit = [f for f in why if f == f"P1/{fname}" or f.startswith(f"P1/{fname}/")]
    assert hit, (kind, sorted(why))
    reasons = reason if isinstance(reason, tuple) else (reason,)
    assert any(r in why[hit[0]] for r in reasons), (kind, why[hit[0]])
    # the summary at the end names the file and the reason
    line = [ln for ln in err.splitlines() if ln.strip().startswith(f"skipped {hit[0]}")]
    assert line and any(r in line[0] for r in reasons), err


def test_bad_media_summary_counts(frames_run):
    table, store, rc, out, err = frames_run
    m = json.load(open(os.path.join(store, "manifest.json")))
    assert [v["video_id"] for v in m["videos"]] == ["P1/good", "P1/seq"]  # the sequence keeps its good frames
    assert m["num_skipped_sources"] == len(table) - 1  # all but the sequence with one unreadable member
    assert f"{m['num_skipped_sources']} skipped" in out
    _assert_clear(err)


# ------------------------------------------------------------------ labelled stills + CSV for `prepare images`

GOOD_PATIENTS = 10


def _odd_images(img_dir):
    """Odd but valid encodings: converted to 8-bit grayscale and kept."""
    rng = np.random.default_rng(1)
    gray = sm.fan_frames(1, H, W, seed=3)[0]
    Image.fromarray(gray).convert("P").save(os.path.join(img_dir, "palette.png"))
    Image.fromarray(gray > 100).save(os.path.join(img_dir, "onebit.png"))
    Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), "LA").save(os.path.join(img_dir, "la.png"))
    Image.fromarray((gray / 255.0).astype(np.float32)).save(os.path.join(img_dir, "float.tif"))
    sm.write_png(os.path.join(img_dir, "sixteen.png"), gray, bits=16)
    Image.fromarray(rng.integers(0, 255, (H, W, 4), dtype=np.uint8), "RGBA").save(os.path.join(img_dir, "rgba.png"))
    return ["palette.png", "onebit.png", "la.png", "float.tif", "sixteen.png", "rgba.png"]


BAD_ROWS = {  # kind: (row, expected reason)
    "unknown class": (["images/P00_0.png", "NOTAPLANE", "P00"], "unknown class 'NOTAPLANE'"),
    "duplicate row": (["images/P01_0.png", "4CH", "P01"], "duplicate of line"),
    "duplicate row with another label": (["images/P02_0.png", "4CH", "P02"], "with a different label/patient"),
    "path outside the root": (["../../etc/passwd", "4CH", "P03"], "outside --root"),
    "absolute path": (["/etc/passwd", "4CH", "P03"], "outside --root"),
    "missing image file": (["images/nothere.png", "4CH", "P03"], "missing file"),
    "empty patient_id": (["images/P04_1.png", "4CH", ""], "empty patient_id"),
    "truncated PNG": (["images/truncated.png", "LVOT", "P05"], "unreadable image"),
    "image too small (odd size)": (["images/tiny.png", "LVOT", "P05"], "image too small (1x1"),
    "not an image (text named .png)": (["images/text.png", "LVOT", "P05"], "unreadable image"),
}


@pytest.fixture(scope="module")
def images_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bad_images"))
    img_dir = os.path.join(root, "images")
    os.makedirs(img_dir)
    classes = ["4CH", "LVOT", "RVOT", "3VV", "3VT"]
    rows = []
    for p in range(GOOD_PATIENTS):
        for n in range(3):
            name = f"images/P{p:02d}_{n}.png"
            sm.write_png(os.path.join(root, name), sm.fan_frames(1, H, W, seed=10 * p + n)[0])
            rows.append([name, classes[(p + n) % 5], f"P{p:02d}"])
    odd = _odd_images(img_dir)
    rows += [[f"images/{f}", "3VV", f"Q{i}"] for i, f in enumerate(odd)]
    data = open(os.path.join(img_dir, "P00_0.png"), "rb").read()
    open(os.path.join(img_dir, "truncated.png"), "wb").write(data[: len(data) // 2])
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(os.path.join(img_dir, "tiny.png"))
    open(os.path.join(img_dir, "text.png"), "w").write("hello")
    bad_line = {}
    all_rows = list(rows)
    for kind, (row, _) in BAD_ROWS.items():
        all_rows.append(row)
        bad_line[kind] = len(all_rows) + 1  # header is line 1
    csv_path = os.path.join(root, "labels.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "class", "patient_id"])
        w.writerows(all_rows)
    store = os.path.join(root, "store")
    rc, out, err = _run(["prepare", "images", "--csv", csv_path, "--out", store, "--size", "32", "--workers", "0",
                         "--seed", "0", "--quiet"])
    return dict(root=root, store=store, rc=rc, out=out, err=err, bad_line=bad_line, odd=odd, good=len(rows))


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_bad_csv_row_is_skipped_and_reported(images_run, kind):
    r = images_run
    assert r["rc"] == 0, r["err"]
    row, reason = BAD_ROWS[kind]
    line = r["bad_line"][kind]
    m = json.load(open(os.path.join(r["store"], "manifest.json")))
    hit = [s for s in m["skipped"] if s["line"] == line]
    assert len(hit) == 1 and reason in hit[0]["reason"], (kind, hit)
    summary = [ln for ln in r["err"].splitlines() if f"(line {line})" in ln]
    assert summary and reason in summary[0] and (row[0] or "labels.csv") in summary[0], r["err"]


def test_odd_image_modes_are_converted_and_kept(images_run):
    """Palette, 1-bit, gray+alpha, float TIFF, 16-bit, RGBA: valid encodings, kept as 8-bit gray."""
    from fetal_ssl_jax.data import records
    from fetal_ssl_jax.data.labelled_store import LabelledStore
    r = images_run
    store = LabelledStore.open(r["store"])
    ids = []
    for split in ("train", "val", "test"):
        src = store.source(split)
        ids += [records.unpack(src[i])["image_id"] for i in range(len(src))]
    assert {f"images/{f}" for f in r["odd"]} <= set(ids)
    assert len(ids) == r["good"]
    assert f"{len(BAD_ROWS)} rows skipped" in r["out"]
    _assert_clear(r["err"])


def test_path_outside_root_is_never_read(images_run):
    from fetal_ssl_jax.data import records
    from fetal_ssl_jax.data.labelled_store import LabelledStore
    store = LabelledStore.open(images_run["store"])
    for split in ("train", "val", "test"):
        src = store.source(split)
        assert not any("passwd" in records.unpack(src[i])["image_id"] for i in range(len(src)))


def _csv(path, header, rows=()):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


CSV_ERRORS = {  # kind: (make the CSV / out, expected message fragments)
    "CSV missing columns": (lambda d: (_csv(f"{d}/a.csv", ["image_path", "label"]), f"{d}/s"),
                            ["a.csv", "needs columns", "patient_id"]),
    "empty CSV": (lambda d: (_csv(f"{d}/b.csv", None), f"{d}/s"), ["b.csv", "needs columns"]),
    "CSV not UTF-8": (lambda d: (open(f"{d}/c.csv", "wb").write(b"\xff\xfe\x00bin\x00\x81\x82,\x83\n") and f"{d}/c.csv",
                                 f"{d}/s"), ["c.csv", "not a readable UTF-8 CSV"]),
    "CSV with no usable rows": (lambda d: (_csv(f"{d}/e.csv", ["image_path", "class", "patient_id"],
                                               [["x.png", "4CH", "P1"]]), f"{d}/s"),
                                ["e.csv", "no usable labelled images"]),
    "no such CSV": (lambda d: (f"{d}/nothere.csv", f"{d}/s"), ["no such CSV", "nothere.csv"]),
    "--out is a file": (lambda d: (_csv(f"{d}/f.csv", ["image_path", "class", "patient_id"],
                                        [["good.png", "4CH", "P1"]]), _csv(f"{d}/outfile", ["x"])),
                        ["outfile", "is a file"]),
}


@pytest.mark.parametrize("kind", list(CSV_ERRORS))
def test_unusable_csv_or_output_exits_2(tmp_path, kind):
    sm.write_png(str(tmp_path / "good.png"), sm.fan_frames(1, H, W, seed=0)[0])
    make, fragments = CSV_ERRORS[kind]
    csv_path, out = make(str(tmp_path))
    rc, _, err = _run(["prepare", "images", "--csv", csv_path, "--out", out, "--size", "32", "--workers", "0",
                       "--quiet"])
    assert rc == 2, err
    _assert_clear(err, *fragments)


# ------------------------------------------------------------------ configs and paths of the training CLIs

def _cfg(name):
    return os.path.join(ROOT, "configs", name)


PRE = ["pretrain", "--config", _cfg("barlowtwins.py:tiny")]
FT = ["finetune", "--config", _cfg("finetune.py:tiny")]
PROBE = ["probe", "--config", _cfg("probe.py:tiny")]
KNN = ["knn", "--config", _cfg("knn.py:tiny")]

CONFIG_ERRORS = {  # kind: (argv after which --workdir W is added, expected exit, message fragments)
    "negative learning rate (pretrain)": (PRE + ["--config.optim.base_lr=-0.1"], 2, ["optim.base_lr must be > 0"]),
    "unknown method name": (PRE + ["--config.method=simsiam"], 2, ["unknown method 'simsiam'", "barlowtwins"]),
    "unknown kernel choice": (PRE + ["--config.model.ops=fast"], 2, ["model.ops must be one of", "cpu_fast"]),
    "unknown compute dtype (fine-tune)": (FT + ["--config.model.dtype=float16"], 2, ["model.dtype must be one of"]),
    "unknown config key": (PRE + ["--config.train.stepz=3"], 2, ["unknown config key 'train.stepz'"]),
    "config value of the wrong type": (PRE + ["--config.train.batch_size=big"], 2,
                                       ["--config.train.batch_size=big", "not a valid int"]),
    "override without a value": (PRE + ["--config.train.steps"], 2, ["--config.train.steps", "needs '=value'"]),
    "bad config file path": (["pretrain", "--config", _cfg("nope.py:tiny")], 2, ["nope.py", "not found"]),
    "unknown config variant": (["pretrain", "--config", _cfg("barlowtwins.py:huge")], 2,
                               ["unknown config variant 'huge'"]),
    "zero training steps": (PRE + ["--config.train.steps=0"], 2, ["train.steps must be > 0"]),
    "rotation beyond 180 degrees": (PRE + ["--config.data.rotation=270"], 2, ["data.rotation", "[0, 180]", "270"]),
    "batch not divisible by the device count": (PRE + ["--config.train.batch_size=6"], 2,
                                                ["train.batch_size=6", "not divisible by the 4 devices"]),
    "missing frame store": (PRE + ["--config.data.store={tmp}/nostore"], 2, ["nostore", "no manifest.json"]),
    "labelled store given as frame store": (PRE + ["--config.data.store={labelled}"], 2,
                                            ["schema 'fetal-planes/1'", "expected 'fetal-frames/1'"]),
    "pretrain workdir is a file": (PRE, 2, ["is a file, not a directory"]),
    "label fraction 0": (FT + ["--config.fraction=0"], 2, ["fraction", "(0, 100]", "got 0"]),
    "label fraction above 100 (probe)": (PROBE + ["--config.fraction=150"], 2, ["fraction", "got 150"]),
    "negative learning rate (fine-tune)": (FT + ["--config.optim.base_lr=-1"], 2, ["optim.base_lr must be > 0"]),
    "fine-tune batch not divisible": (FT + ["--config.train.batch_size=6"], 2, ["not divisible by the 4 devices"]),
    "unknown config key (fine-tune)": (FT + ["--config.foo=1"], 2, ["unknown config key 'foo'"]),
    "bad config file path (fine-tune)": (["finetune", "--config", _cfg("nope.py")], 2, ["nope.py", "not found"]),
    "probe epochs 0": (PROBE + ["--config.probe.epochs=0"], 2, ["probe.epochs must be > 0"]),
    "negative fine-tune step floor": (FT + ["--config.train.min_steps=-5"], 2, ["train.min_steps must be >= 0"]),
    "knn k 0": (KNN + ["--config.knn.k=0"], 2, ["knn.k must be > 0"]),
    "config of another protocol": (["finetune", "--config", _cfg("probe.py:tiny")], 2, ["is a 'probe' config"]),
    "missing labelled store": (FT + ["--config.data.store={tmp}/nostore"], 2, ["nostore", "missing manifest.json"]),
    "frame store given as labelled store": (FT + ["--config.data.store={frames}"], 2,
                                            ["schema 'fetal-frames/1'", "expected 'fetal-planes/1'"]),
    "label fraction not in the store": (FT + ["--config.data.store={labelled}", "--config.fraction=5"], 2,
                                        ["no 5% subset for seed 0"]),
    "init without an encoder": (FT + ["--config.data.store={labelled}", "--config.init={tmp}"], 2,
                                ["no encoder found", "did pretraining finish?"]),
    "fine-tune workdir is a file": (FT, 2, ["is a file, not a directory"]),
    "unknown command": (["pretrian"], 2, ["unknown command 'pretrian'"]),
    "inspect a missing store": (["inspect", "{tmp}/nostore"], 2, ["nostore", "no readable manifest.json"]),
}


@pytest.fixture(scope="module")
def stores(frames_run, images_run):
    return {"frames": frames_run[1], "labelled": images_run["store"]}


@pytest.mark.parametrize("kind", list(CONFIG_ERRORS))
def test_bad_config_or_path_is_refused_before_any_work(tmp_path, stores, kind, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv, code, fragments = CONFIG_ERRORS[kind]
    fill = dict(stores, tmp=str(tmp_path))
    argv = [a.format(**fill) for a in argv]
    workdir = str(tmp_path / "run")
    if "workdir is a file" in kind:
        open(workdir, "w").write("not a directory")
    if argv[0] not in ("inspect", "pretrian"):
        argv += ["--workdir", workdir]
    rc, out, err = _run(argv)
    assert rc == code, (rc, err[-2000:])
    _assert_clear(err, *[f.format(**fill) for f in fragments])
    if os.path.isdir(workdir):  # nothing was trained or compiled: no checkpoints, no encoder
        assert not {"checkpoints", "encoder", "metrics.json"} & set(os.listdir(workdir)), os.listdir(workdir)
