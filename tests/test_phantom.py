"""The synthetic fetal-echo simulator: layout, determinism, speckle physics, class balance, decoding."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from fetal_ssl_jax import phantom
from fetal_ssl_jax.phantom import acoustics as AC
from fetal_ssl_jax.phantom import anatomy as A
from fetal_ssl_jax.phantom import export


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "a"
    summary = phantom.generate(str(out), "tiny", seed=3)
    return out, summary


def _files(root) -> dict[str, str]:
    res = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            res[os.path.relpath(p, root)] = export.file_digest(p)
    return res


def test_layout_and_labels(tiny):
    out, summary = tiny
    with open(out / "labels.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image_path", "class", "patient_id"]
    rows = rows[1:]
    assert len(rows) == summary["num_images"] == 60
    for path, cls, pid in rows:
        assert cls in phantom.CLASSES
        assert path.startswith("images/") and os.path.basename(path).startswith(pid + "_")
        assert (out / path).is_file()
    vids = sorted((out / "videos").glob("*/*.mp4"))
    assert len(vids) == summary["num_videos"] == 3
    for v in vids:
        meta = json.loads(v.with_suffix(".json").read_text())
        assert v.parent.name == meta["patient_id"]
        assert len(meta["s"]) == len(meta["plane"]) == meta["num_frames"] == 16
        assert set(meta["plane"]) <= set(phantom.CLASSES) | {"transition"}
    # disjoint by default: no labelled patient has videos
    assert not {r[2] for r in rows} & {v.parent.name for v in vids}


def test_deterministic_bytes(tiny, tmp_path):
    out, _ = tiny
    phantom.generate(str(tmp_path / "b"), "tiny", seed=3, workers=1)  # threads never change bytes
    a, b = _files(out), _files(tmp_path / "b")
    a.pop("phantom.json"), b.pop("phantom.json")  # holds the output path
    assert a == b
    c = phantom.generate(str(tmp_path / "c"), "tiny", seed=4, images=10, patients=1)
    assert c["num_images"] == 10
    assert _files(tmp_path / "c")["videos/P0000/P0000_v00.mp4"] != a["videos/P0000/P0000_v00.mp4"]


def test_mp4_decodes_to_expected_frames(tiny):
    import av
    out, _ = tiny
    path = sorted((out / "videos").glob("*/*.mp4"))[0]
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) == 16 and frames[0].shape == (64, 64)
    assert frames[5].std() > 5  # an image, not a blank


@pytest.mark.parametrize("fmt,ext", [("dicom", ".dcm"), ("avi", ".avi")])
def test_other_video_formats(tmp_path, fmt, ext):
    s = phantom.generate(str(tmp_path), "tiny", seed=1, format=fmt, patients=1, frames=6, images=5)
    files = list((tmp_path / "videos").glob("*/*" + ext))
    assert len(files) == 1 and s["num_frames"] == 6
    if fmt == "dicom":
        import pydicom
        ds = pydicom.dcmread(files[0])
        assert int(ds.NumberOfFrames) == 6 and ds.pixel_array.shape == (6, 64, 64)
    else:
        import av
        with av.open(str(files[0])) as c:
            assert sum(1 for _ in c.decode(video=0)) == 6


def test_class_unbalance_and_overlap():
    cfg = phantom.resolve("demo", labelled_patients=50, images=2000)
    from fetal_ssl_jax.phantom import synthesis as Y
    alloc = Y.allocate_classes(cfg, seed=0)
    counts = np.bincount(np.concatenate(alloc), minlength=5)
    assert counts.sum() == 2000 and counts.argmax() == 0
    assert counts.min() > 0.08 * 2000 and counts[0] > 1.8 * counts.min()
    assert len(alloc) == 50 and all(len(a) in (40,) for a in alloc)
    # 1% of the train split still has every class
    assert counts.min() * 0.7 * 0.01 >= 1
    ov = phantom.resolve("tiny", overlap=True)
    assert Y.labelled_patient_index(ov, 0) == 0
    assert Y.labelled_patient_index(phantom.resolve("tiny"), 0) == ov.video_patients()


def test_variance_vs_size_design():
    v = phantom.resolve("tiny", patients=4, videos_per_patient=4, design="variance")
    s = phantom.resolve("tiny", patients=4, videos_per_patient=4, design="size", size_factor=8)
    assert v.num_videos() == s.num_videos() == 16
    assert (v.video_patients(), s.video_patients()) == (16, 2)


def test_speckle_is_rayleigh():
    rng = np.random.default_rng(0)
    amp = np.ones((4, 256, 128), np.float32)
    ac = AC.Acoustics(psf_axial=1.5, psf_lateral=1.2, psf_lateral_far=2.5)
    env = AC.simulate_envelope(amp, rng, ac)[:, 20:-20, 20:-20]
    snr = env.mean() / env.std()
    assert abs(snr - 1.91) < 0.2, snr
    assert abs(snr - AC.RAYLEIGH_SNR) < 0.1


def _acf_width(env: np.ndarray, axis: int) -> float:
    """Half-width (samples) where the intensity autocovariance falls to exp(-1/2) (= sigma of the PSF)."""
    x = env.astype(np.float64) ** 2
    x = x - x.mean()
    f = np.fft.rfft(x, axis=axis, n=2 * x.shape[axis])
    acf = np.fft.irfft(f * np.conj(f), axis=axis)
    acf = acf.mean(axis=tuple(i for i in range(x.ndim) if i != axis))[:20]
    acf = acf / acf[0]
    k = int(np.argmax(acf < np.exp(-0.5)))
    return k - 1 + (acf[k - 1] - np.exp(-0.5)) / (acf[k - 1] - acf[k])


def test_speckle_cell_size_follows_psf():
    amp = np.ones((2, 256, 128), np.float32)
    out = {}
    for ax, lat in ((1.0, 2.5), (2.5, 1.0)):
        ac = AC.Acoustics(psf_axial=ax, psf_lateral=lat, psf_lateral_far=lat)
        env = AC.simulate_envelope(amp, np.random.default_rng(1), ac)[:, 10:-10, 10:-10]
        out[(ax, lat)] = (_acf_width(env, 1), _acf_width(env, 2))
    for (ax, lat), (wa, wl) in out.items():
        # intensity ACF of a Gaussian PSF with sigma s is a Gaussian with sigma s
        assert abs(wa - ax) < 0.25 * ax + 0.2, (ax, wa)
        assert abs(wl - lat) < 0.25 * lat + 0.2, (lat, wl)
    assert out[(1.0, 2.5)][1] > 1.8 * out[(1.0, 2.5)][0] and out[(2.5, 1.0)][0] > 1.8 * out[(2.5, 1.0)][1]


def test_speckle_decorrelates_gradually():
    frames = next(phantom.sweep_frames(1, 12, size=64, seed=0, rotation_deg=0.0))[2].astype(np.float64)
    c1 = np.corrcoef(frames[4].ravel(), frames[5].ravel())[0, 1]
    c6 = np.corrcoef(frames[4].ravel(), frames[10].ravel())[0, 1]
    assert 0.5 < c1 < 0.999 and c6 < c1


def test_in_memory_api():
    vids = list(phantom.sweep_frames(num_videos=3, num_frames=8, size=64, seed=0, videos_per_patient=2))
    assert [v[0] for v in vids] == ["P0000_v00", "P0000_v01", "P0001_v00"]
    assert all(v[2].shape == (8, 64, 64) and v[2].dtype == np.uint8 for v in vids)
    imgs, labels, pids = phantom.labelled_images([3, 2, 2, 2, 1], size=64, seed=0, num_patients=3)
    assert imgs.shape == (10, 64, 64) and imgs.dtype == np.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4] and len(set(pids)) == 3
    again = phantom.labelled_images([3, 2, 2, 2, 1], size=64, seed=0, num_patients=3)[0]
    assert np.array_equal(imgs, again)


def test_plane_labels_follow_sweep_position():
    s = np.array([A.KEYFRAMES[c] for c in A.CLASSES] + [0.36, 0.0])
    assert A.plane_of(s).tolist() == list(A.CLASSES) + ["transition", "transition"]


def test_cli_preview_and_export(tmp_path):
    import argparse
    from fetal_ssl_jax.phantom import cli
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path / "x"), "--images", "5", "--patients", "1", "--frames", "4",
                         "--no-progress"])
    assert cli.run(args, []) == 0
    assert (tmp_path / "x" / "labels.csv").is_file()


@pytest.mark.parametrize("temporal", [True, False])
def test_culled_labels_match_full_evaluation(monkeypatch, temporal):
    """Evaluating each structure only in its polar bounding box paints exactly the same labels."""
    from fetal_ssl_jax.phantom import scanner as S
    from fetal_ssl_jax.phantom import sweep as W
    from fetal_ssl_jax.phantom import synthesis as Y
    rng = np.random.default_rng(2)
    fetus = Y.fetus_of(0, 3, 1.0)
    ren = S.Renderer(fetus, S.STYLES[2], (96, 96), rng, temporal=temporal)
    s = np.linspace(0.1, 0.95, 12)
    phase = rng.uniform(0, 1, 12)
    pose = W.video_pose(rng, 12, W.base_pose(rng)) if temporal else W.still_poses(rng, 12)
    culled = ren.labels(s, phase, pose)
    full_eval = A.render_labels
    monkeypatch.setattr(A, "render_labels", lambda *a, **k: full_eval(*a[:6]))  # drop `locate`
    assert np.array_equal(culled, ren.labels(s, phase, pose))


@pytest.mark.parametrize("size", [64, 256])
def test_scan_conversion_weights(size):
    """Sparse scan conversion: weights sum to one inside the fan (a flat image stays flat), zero outside."""
    from fetal_ssl_jax.phantom import scanner as S
    g = S.geometry(S.STYLES[1], size, size)
    assert g.depth_samples >= S.MIN_DEPTH_SAMPLES
    img = np.full((2, g.depth_samples, g.beams), 0.7, np.float32)
    out = S.scan_convert(img, g).reshape(2, -1)
    assert np.allclose(out[:, g.fan_index], 0.7, atol=1e-5)
    outside = np.setdiff1d(np.arange(size * size), g.fan_index)
    assert outside.size > 0 and np.all(out[:, outside] == 0)
