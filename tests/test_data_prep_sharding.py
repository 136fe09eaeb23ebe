"""`prepare frames|images --shard I/N` + `prepare merge`: the merged store is the single-process store, byte for byte."""
import csv
import glob
import json
import os

import numpy as np
import pytest

from data_prep import cli, sharding
from data_prep import sample_media as sm

H, W = 48, 64


def _videos(root):
    for p in range(3):
        for v in range(2):
            d = os.path.join(root, "videos", f"P{p:03d}")
            os.makedirs(d, exist_ok=True)
            sm.write_video(os.path.join(d, f"v{v}.mp4"), sm.fan_frames(12, H, W, seed=10 * p + v))
    with open(os.path.join(root, "videos", "P000", "broken.mp4"), "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42 not really a video")  # a skipped source is merged like the rest
    return os.path.join(root, "videos")


def _stills(root):
    rng = np.random.default_rng(0)
    rows = []
    for p in range(12):
        for n in range(3):
            name = f"images/P{p:02d}_{n}.png"
            sm.write_png(os.path.join(root, name), sm.fan_frames(1, H, W, seed=100 * p + n)[0])
            rows.append([name, ["4CH", "LVOT", "RVOT", "3VV", "3VT"][int(rng.integers(0, 5))], f"P{p:02d}"])
    with open(os.path.join(root, "images", "bad.png"), "wb") as f:
        f.write(b"not a png")
    rows += [["images/bad.png", "4CH", "P00"], ["images/missing.png", "4CH", "P01"]]
    path = os.path.join(root, "labels.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "class", "patient_id"])
        w.writerows(rows)
    return path


def _store_files(store):
    """Every file of the store except the shards' bookkeeping and the lock."""
    out = {}
    for p in sorted(glob.glob(os.path.join(store, "**", "*"), recursive=True)):
        name = os.path.relpath(p, store)
        if os.path.isfile(p) and name != ".lock" and not name.startswith(sharding.SHARDS + os.sep):
            with open(p, "rb") as f:
                out[name] = f.read()
    return out


def test_shard_of_is_stable_and_balanced():
    assert sharding.shard_of("P000/v0.mp4", 7) == sharding.shard_of("P000/v0.mp4", 7)
    # a fixed value: the same on every machine and Python version (sha256, not hash())
    assert [sharding.shard_of(f"P{i:03d}/v.mp4", 3) for i in range(6)] == \
        [int(__import__("hashlib").sha256(f"P{i:03d}/v.mp4".encode()).hexdigest()[:16], 16) % 3 for i in range(6)]
    counts = np.bincount([sharding.shard_of(f"p{i}/v{i}.mp4", 4) for i in range(400)], minlength=4)
    assert counts.min() > 70
    assert sharding.parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "x", "1/0", "-1/3"):
        with pytest.raises(Exception):
            sharding.parse_shard(bad)


def test_sharded_frames_store_is_byte_identical_for_n_1_3_7(tmp_path):
    src = _videos(str(tmp_path))
    common = ["--src", src, "--size", "32", "--stride", "2", "--workers", "0", "--salt", "s1", "--quiet"]
    single = str(tmp_path / "single")
    assert cli.main(["frames", "--out", single, *common]) == 0
    ref = _store_files(single)
    assert "manifest.json" in ref and sum(k.endswith(".array_record") for k in ref) == 6
    for n in (1, 3, 7):
        store = str(tmp_path / f"n{n}")
        assert cli.main(["merge", "--out", store]) == 2  # nothing to merge yet
        for i in range(n):
            assert cli.main(["frames", "--out", store, "--shard", f"{i}/{n}", *common]) == 0
            if i == 0 and n > 1:
                assert cli.main(["merge", "--out", store]) == 2  # refused: shards missing
                assert not os.path.exists(os.path.join(store, "manifest.json"))
        assert cli.main(["merge", "--out", store]) == 0
        got = _store_files(store)
        assert got == ref, (n, sorted(set(got) ^ set(ref)) or [k for k in ref if got[k] != ref[k]])
        sources = [json.load(open(sharding.marker_path(store, i, n)))["sources"] for i in range(n)]
        assert sorted(sum(sources, [])) == sorted(s["source"] for s in json.load(open(
            os.path.join(single, "manifest.json")))["sources"])  # each source in exactly one shard
    # rerunning a finished shard converts nothing
    m = sharding.frames_shard(src, str(tmp_path / "n3"), __import__("data_prep.frames").frames.FrameSettings(
        size=32, stride=2), 1, 3, workers=0, salt="s1", progress=False)
    assert m["converted"] == 0


def test_sharded_images_store_is_byte_identical_for_n_1_3_7(tmp_path):
    csv_path = _stills(str(tmp_path))
    common = ["--csv", csv_path, "--size", "32", "--seed", "0", "1", "--workers", "0", "--quiet"]
    single = str(tmp_path / "single")
    assert cli.main(["images", "--out", single, *common]) == 0
    ref = _store_files(single)
    assert {"manifest.json", "splits.json", "train.array_record"} <= set(ref)
    assert len(json.loads(ref["manifest.json"])["skipped"]) == 2
    for n in (1, 3, 7):
        store = str(tmp_path / f"n{n}")
        for i in range(n):
            assert cli.main(["images", "--out", store, "--shard", f"{i}/{n}", *common]) == 0
        assert cli.main(["merge", "--out", store]) == 0
        got = _store_files(store)
        assert got == ref, (n, [k for k in ref if got.get(k) != ref[k]])
        assert not glob.glob(os.path.join(store, sharding.SHARDS, "*.npz"))  # intermediate arrays removed
        assert cli.main(["merge", "--out", store]) == 0  # up to date: a no-op
        assert _store_files(store) == ref


def test_a_shard_with_bad_input_says_why_and_exits_2(tmp_path, capsys):
    missing = str(tmp_path / "no_such_export")
    assert cli.main(["frames", "--src", missing, "--out", str(tmp_path / "s"), "--shard", "0/2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prepare frames: ") and "no_such_export" in err and "Traceback" not in err
