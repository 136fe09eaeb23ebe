"""The frame-store builder: layout, reruns, bad files, --strict, kill-and-rerun identity."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from data_prep import cli, frames
from data_prep import sample_media as sm
from fetal_ssl_jax.data import records
from fetal_ssl_jax.data.frame_store import FrameStore, decode_frame

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 48, 64


def _export(root, n_patients=3, videos=2, frames_per=15):
    for p in range(n_patients):
        for v in range(videos):
            f = sm.fan_frames(frames_per, H, W, seed=10 * p + v)
            d = os.path.join(root, "videos", f"P{p:03d}")
            os.makedirs(d, exist_ok=True)
            sm.write_video(os.path.join(d, f"v{v}.mp4"), f)
            with open(os.path.join(d, f"v{v}.json"), "w") as fh:
                json.dump({"planes": []}, fh)  # sidecar: ignored quietly
    return os.path.join(root, "videos")


def _files(store):
    out = {}
    for p in sorted(glob.glob(os.path.join(store, "**", "*"), recursive=True)):
        name = os.path.relpath(p, store)
        if os.path.isfile(p) and name not in (".lock", "patient_salt"):
            with open(p, "rb") as f:
                out[name] = f.read()
    return out


def test_build_and_rerun(tmp_path):
    src = _export(str(tmp_path))
    store = str(tmp_path / "store")
    args = ["frames", "--src", src, "--out", store, "--size", "32", "--stride", "2", "--workers", "2", "--quiet"]
    assert cli.main(args) == 0
    m = json.load(open(os.path.join(store, "manifest.json")))
    assert m["num_videos"] == 6 and m["num_patients"] == 3 and m["num_skipped_sources"] == 0
    assert m["frame_shape"] == [32, 32] and m["settings"]["stride"] == 2 and not m["skipped"]
    assert all(len(s["sha256"]) == 64 for s in m["sources"])
    assert set(m["patients"]) == {"P000", "P001", "P002"}
    fs = FrameStore.open(store)
    src_ds = fs.source()
    assert len(src_ds) == len(fs) == m["num_frames"] == sum(v["count"] for v in m["videos"])
    ranges = fs.video_ranges()
    start = 0
    for v in m["videos"]:  # contiguous, in frame order, ranges cover their video
        assert v["start"] == start
        recs = [decode_frame(src_ds[i]) for i in range(v["start"], v["start"] + v["count"])]
        assert all(r["video_id"] == v["video_id"] and r["patient_id"] == v["patient_id"] for r in recs)
        idx = [r["frame_index"] for r in recs]
        assert idx == sorted(idx) and all(i % 2 == 0 for i in idx)
        assert recs[0]["image"].shape == (32, 32)
        assert tuple(ranges[v["start"]]) == (v["start"], v["start"] + v["count"])
        start += v["count"]
    import argparse
    from data_prep import inspect_store
    ap = argparse.ArgumentParser()
    inspect_store.add_arguments(ap)
    assert inspect_store.run(ap.parse_args([store, "--sheet", str(tmp_path / "sheet.png")])) == 0
    assert os.path.getsize(tmp_path / "sheet.png") > 1000
    before = _files(store)
    res = frames.build(src, store, frames.FrameSettings(size=32, stride=2), workers=0, progress=False)
    assert res.converted == 0 and res.reused == 6
    assert _files(store) == before
    # a new video is added: only it is converted; the others' shards are untouched
    os.makedirs(os.path.join(src, "P009"))
    sm.write_video(os.path.join(src, "P009", "new.mp4"), sm.fan_frames(10, H, W, seed=99))
    res = frames.build(src, store, frames.FrameSettings(size=32, stride=2), workers=0, progress=False)
    assert res.converted == 1 and res.manifest["num_videos"] == 7
    after = _files(store)
    assert all(after[k] == v for k, v in before.items() if k.endswith(".array_record"))
    # other settings on the same store are refused
    assert cli.main(["frames", "--src", src, "--out", store, "--size", "64", "--workers", "0", "--quiet"]) == 2


def test_dedup_blank_and_stride(tmp_path):
    d = tmp_path / "src" / "P1"
    d.mkdir(parents=True)
    f = sm.fan_frames(6, H, W, seed=1)
    frozen = np.concatenate([f[:2], np.repeat(f[2:3], 5, 0), np.zeros((3, H, W), np.uint8), f[3:]])
    sm.write_hdf5(str(d / "x.h5"), {"v": frozen})
    m = frames.build(str(tmp_path / "src"), str(tmp_path / "st"), frames.FrameSettings(size=32, stride=1),
                     workers=0, progress=False).manifest
    v, = m["videos"]
    assert (v["sampled"], v["dropped_duplicate"], v["dropped_blank"], v["count"]) == (13, 4, 3, 6)


def _bad_export(root):
    d = os.path.join(root, "P1")
    os.makedirs(os.path.join(d, "seq"))
    good = sm.fan_frames(8, H, W, seed=5)
    sm.write_video(os.path.join(d, "good.mp4"), good)
    data = open(os.path.join(d, "good.mp4"), "rb").read()
    open(os.path.join(d, "truncated.mp4"), "wb").write(data[: len(data) // 2])
    sm.write_png(os.path.join(root, "tmp.png"), good[0])
    os.replace(os.path.join(root, "tmp.png"), os.path.join(d, "picture.mp4"))           # wrong extension
    open(os.path.join(d, "empty.avi"), "wb").close()
    sm.write_hdf5(os.path.join(d, "zero.h5"), {"v": np.zeros((0, H, W), np.uint8)})    # zero frames
    sm.write_dicom(os.path.join(d, "nopix.dcm"), good, "raw", pixel_data=False)        # no pixel data
    p = os.path.join(d, "mpeg2.dcm")
    sm.write_dicom(p, good, "jpeg")
    import pydicom
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"                         # MPEG-2: no decoder
    ds.save_as(p)
    open(os.path.join(d, "notes.txt"), "w").write("ignored")
    for i in range(4):
        sm.write_png(os.path.join(d, "seq", f"frame_{i}.png"), good[i])
    open(os.path.join(d, "seq", "frame_4.png"), "wb").write(b"\x89PNG\r\n\x1a\n garbage")  # unreadable PNG
    return root


def test_bad_files_are_reported_and_strict(tmp_path):
    src = _bad_export(str(tmp_path / "src"))
    store = str(tmp_path / "st")
    base = ["frames", "--src", src, "--out", store, "--size", "32", "--stride", "1", "--workers", "0", "--quiet"]
    assert cli.main(base) == 0
    m = json.load(open(os.path.join(store, "manifest.json")))
    why = {s["file"]: s["reason"] for s in m["skipped"]}
    assert why["P1/truncated.mp4"].startswith(("cannot open video", "decode error"))
    assert why["P1/picture.mp4"].startswith("wrong extension")
    assert why["P1/empty.avi"].startswith("empty file")
    assert "zero frames" in why["P1/zero.h5"]
    assert "no pixel data" in why["P1/nopix.dcm"]
    assert "unsupported transfer syntax" in why["P1/mpeg2.dcm"]
    assert "unreadable image" in why["P1/seq/frame_4.png"]
    assert "P1/notes.txt" not in why
    assert {v["video_id"]: v["count"] for v in m["videos"]} == {"P1/good": 8, "P1/seq": 4}
    # rerun: skipped sources are not retried (same bytes), --strict turns the skips into exit 1
    assert cli.main(base + ["--strict"]) == 1


@pytest.mark.timeout(120)
def test_kill_and_rerun_is_identical(tmp_path):
    src = _export(str(tmp_path), n_patients=5, videos=2, frames_per=30)
    opts = ["--src", src, "--size", "48", "--stride", "1", "--salt", "k", "--quiet"]
    ref = str(tmp_path / "ref")
    assert cli.main(["frames", "--out", ref, "--workers", "0"] + opts) == 0
    killed = str(tmp_path / "killed")
    cmd = [sys.executable, os.path.join(ROOT, "launch.py"), "prepare", "frames", "--out", killed, "--workers", "1"]
    proc = subprocess.Popen(cmd + opts, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(glob.glob(os.path.join(killed, "parts", "*.json"))) < 2:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(glob.glob(os.path.join(killed, "parts", "*.json")))
    assert 0 < done < 10, "the run was not interrupted mid-way"
    assert not os.path.exists(os.path.join(killed, "manifest.json"))
    assert cli.main(["frames", "--out", killed, "--workers", "2"] + opts) == 0
    a, b = _files(ref), _files(killed)
    assert sorted(a) == sorted(b)
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]


def test_frame_store_writer_still_works(tmp_path):
    """The engine's own writer (used for tiny test stores) keeps its behaviour."""
    from fetal_ssl_jax.data.frame_store import FrameStoreWriter
    w = FrameStoreWriter(str(tmp_path), frames_per_shard=3)
    w.add_video("a", "p", [np.zeros((8, 8), np.uint8)] * 2)
    w.add_video("b", "p", [np.ones((8, 8), np.uint8)] * 2)
    m = w.close()
    assert m["num_frames"] == 4 and len(m["shards"]) == 1
    assert len(records.read_records(os.path.join(str(tmp_path), m["shards"][0]))) == 4


def test_one_worker_is_recycled_without_hanging(tmp_path, monkeypatch):
    """--workers 1 over more sources than a worker may convert: CPython's pool hung once its only worker
    was recycled (64 of 128 sources); now each batch gets a fresh pool, and the store equals --workers 0's."""
    src = _export(str(tmp_path), n_patients=3, videos=1, frames_per=6)
    monkeypatch.setattr(frames, "SOURCES_PER_WORKER", 1)  # 3 sources: three pools of one worker
    stores = {}
    for workers in ("1", "0"):
        stores[workers] = str(tmp_path / f"w{workers}")
        args = ["frames", "--src", src, "--out", stores[workers], "--size", "32", "--workers", workers, "--quiet",
                "--salt", "s"]
        assert cli.main(args) == 0
    assert FrameStore.open(stores["1"]).manifest["num_videos"] == 3
    assert _files(stores["1"]) == _files(stores["0"])
