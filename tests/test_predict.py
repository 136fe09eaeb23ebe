"""The plane finder: per-frame probabilities over a simulator video (MP4 and DICOM), outputs, frame error."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data_prep import predict as cli
from fetal_ssl_jax.evaluate import plane_scoring as P

CLASSES = ["4CH", "LVOT", "RVOT", "3VV", "3VT"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A (random) tiny fine-tuned-model checkpoint in the layout launch.py finetune writes."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    from fetal_ssl_jax.models import build_backbone, initialise
    from fetal_ssl_jax.train import encoder_io
    wd = str(tmp_path_factory.mktemp("ft"))
    cfg = ml_collections.ConfigDict(dict(arch="resnet18", width=0.125, small_stem=True, zero_init_residual=False,
                                         dtype="float32"))
    model = build_backbone(cfg, num_classes=5)
    v = jax.tree.map(np.asarray, dict(initialise.init_module(model, jax.random.key(0), jnp.zeros((1, 32, 32, 1)),
                                                             train=False)))
    encoder_io.save_encoder(os.path.join(wd, "encoder"), v, cfg,
                            dict(method="supervised", classes=CLASSES, image_size=32,
                                 normalize=dict(mean=0.5, std=0.25)))
    return wd


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from fetal_ssl_jax import phantom
    out = {}
    for fmt in ("mp4", "dicom"):
        d = str(tmp_path_factory.mktemp(fmt))
        phantom.generate(d, "tiny", seed=0, patients=1, frames=40, images=5, labelled_patients=1, format=fmt)
        vids = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(d, "videos")) for f in fs
                if not f.endswith(".json")]
        out[fmt] = vids[0]
    return out


@pytest.mark.parametrize("fmt", ["mp4", "dicom"])
def test_predict_writes_probabilities_timeline_and_best_frames(classifier, videos, fmt, tmp_path):
    r = cli.predict(classifier, videos[fmt], str(tmp_path), window=3)
    probs = np.asarray(r["probabilities"])
    assert probs.shape == (40, 5) and np.allclose(probs.sum(1), 1, atol=1e-3)
    assert r["frame_index"] == list(range(40)) and r["classes"] == CLASSES
    for name in CLASSES:
        b = r["best"][name]
        assert 0 <= b["frame"] < 40 and 0 < b["score"] <= 1 and os.path.getsize(b["png"]) > 500
    assert open(os.path.join(tmp_path, "timeline.png"), "rb").read(4) == b"\x89PNG"
    saved = json.load(open(os.path.join(tmp_path, "predictions.json")))
    assert saved["frame_error"] is not None and saved["frame_error"]["mean_frame_error"] >= 0  # sidecar found
    if fmt == "mp4":
        assert r["fps"] == pytest.approx(25.0)


def test_frame_error_against_sidecar_truth():
    planes = ["transition"] * 3 + ["4CH"] * 4 + ["transition"] * 3 + ["LVOT"] * 3
    s = [0.1, 0.2, 0.25, 0.28, 0.29, 0.30, 0.31, 0.34, 0.36, 0.38, 0.41, 0.42, 0.43]
    probs = np.full((13, 2), 0.1)
    probs[4, 0] = 0.9      # 4CH found at frame 4, truth centre (s closest to 0.30) frame 5
    probs[8, 1] = 0.8      # LVOT found at frame 8, outside its window; centre frame 11
    best = P.best_frames(probs, np.arange(13), ["4CH", "LVOT"])
    fe = P.frame_errors(best, dict(plane=planes, s=s))
    assert fe["per_plane"]["4CH"] == dict(true_frame=5, found_frame=4, error=1, in_window=True, window=[3, 6],
                                              window_distance=0)
    assert fe["per_plane"]["LVOT"]["error"] == 3 and not fe["per_plane"]["LVOT"]["in_window"]
    assert fe["per_plane"]["LVOT"]["window_distance"] == 2
    assert fe["mean_frame_error"] == 2.0 and fe["fraction_in_window"] == 0.5 and fe["mean_window_distance"] == 1.0


def test_smoothing_keeps_shape_and_mass():
    p = np.eye(5)[np.arange(20) % 5].astype(np.float64)
    q = P.smooth(p, 5)
    assert q.shape == p.shape and np.allclose(q.sum(1), 1)


def test_cli_rejects_an_encoder_without_head(tmp_path):
    import argparse
    import jax
    import jax.numpy as jnp
    import ml_collections
    from fetal_ssl_jax.models import build_backbone, initialise
    from fetal_ssl_jax.train import encoder_io
    cfg = ml_collections.ConfigDict(dict(arch="resnet18", width=0.125, small_stem=True, dtype="float32"))
    model = build_backbone(cfg)
    v = jax.tree.map(np.asarray, dict(initialise.init_module(model, jax.random.key(0), jnp.zeros((1, 32, 32, 1)),
                                                             train=False)))
    encoder_io.save_encoder(str(tmp_path / "encoder"), v, cfg, dict(method="barlowtwins", image_size=32))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    args = argparse.Namespace(checkpoint=str(tmp_path), video=str(video), out=None, stride=1, smooth=1, crop="fan",
                              truth=None)
    assert cli.run(args, []) == 2
