"""The phantom's inter-patient variability knobs: video_variability (how much of a video's set-up is its
own rather than its patient's) and the number of distinct video patients at a fixed number of videos."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy.special import ndtri

from fetal_ssl_jax import phantom
from fetal_ssl_jax.phantom import sweep as W
from fetal_ssl_jax.phantom import synthesis as Y


def _scenes(v: float, seed: int = 0):
    cfg = phantom.resolve("tiny", video_variability=v, frames=8)
    return (Y.video_scene(cfg, seed, 0, 0), Y.video_scene(cfg, seed, 0, 1), Y.video_scene(cfg, seed, 1, 0))


def _setup(sc) -> tuple:
    """The parts of a video's set-up the knob moves: pose, exam settings, maternal wall, screen."""
    return (tuple(float(x) for x in sc.base_pose.values()), sc.renderer.ac, sc.renderer.background.tobytes(),
            sc.renderer.ui_value.tobytes())


def test_variability_zero_fixes_the_setup_per_patient():
    a, b, other = _scenes(0.0)
    assert _setup(a) == _setup(b)                       # two videos of one patient: one set-up
    pa, po = _setup(a)[0], _setup(other)[0]
    assert all(x != y for x, y in zip(pa[:4], po[:4]))  # another patient: another place, zoom, angle
    assert _setup(a)[1] != _setup(other)[1]
    # what stays per video: the sweep's timing and jitter, the cardiac phase, tremor and speckle
    assert not np.allclose(a.s, b.s) and not np.allclose(a.phase, b.phase)
    assert not np.allclose(a.pose.cx, b.pose.cx)
    assert not np.array_equal(a.renderer.pool.pool, b.renderer.pool.pool)


def test_variability_one_is_every_video_its_own_and_the_default():
    a, b, _ = _scenes(1.0)
    pa, pb = _setup(a)[0], _setup(b)[0]
    assert all(x != y for x, y in zip(pa[:4], pb[:4])) and _setup(a)[1] != _setup(b)[1]
    d = Y.video_scene(phantom.resolve("tiny", frames=8), 0, 0, 0)  # default config = 1.0, same draws
    assert _setup(d) == _setup(a) and np.array_equal(d.s, a.s)


def test_knob_moves_only_the_shared_parts():
    """The video stream is consumed identically at any knob value: phase, tremor and speckle never move."""
    scenes = [_scenes(v)[0] for v in (0.0, 0.3, 1.0)]
    for sc in scenes[1:]:
        assert np.array_equal(sc.phase, scenes[0].phase)
        assert np.array_equal(sc.renderer.pool.pool, scenes[0].renderer.pool.pool)
        assert np.allclose(sc.pose.cx - sc.base_pose["cx"], scenes[0].pose.cx - scenes[0].base_pose["cx"])
    assert _setup(scenes[0])[0] != _setup(scenes[2])[0]


def test_shared_draws_keep_the_distribution_and_correlate_one_minus_v():
    n = 600
    for v in (0.0, 0.5, 1.0):
        x = np.empty((n, 2))
        for p in range(n):
            for k in range(2):
                d = Y.SharedDraws(np.random.default_rng([7, p, k]), np.random.default_rng([8, p]), v)
                x[p, k] = W.base_pose(d)["cx"]
        assert abs(x.mean()) < 0.012 and abs(x.std() - 0.24 / np.sqrt(12)) < 0.007  # still U(-0.12, 0.12)
        z = ndtri((x + 0.12) / 0.24)
        r = np.corrcoef(z[:, 0], z[:, 1])[0, 1]
        assert abs(r - (1 - v)) < 0.1, (v, r)
    own, ref = np.random.default_rng(3), np.random.default_rng(3)
    d = Y.SharedDraws(own, np.random.default_rng(4), 1.0)
    assert d.uniform(2, 5) == ref.uniform(2, 5) and d.integers(0, 9) == ref.integers(0, 9)
    assert np.array_equal(d.standard_normal(3), ref.standard_normal(3)) and d.random() == ref.random()


def test_video_patients_at_a_fixed_number_of_videos(tmp_path):
    cfg = phantom.resolve("tiny", videos=10, patients=4)
    assert cfg.video_counts() == [3, 3, 2, 2] and cfg.num_videos() == 10 and cfg.video_patients() == 4
    assert [phantom.resolve("tiny", videos=8, patients=k).video_patients() for k in (1, 2, 8, 20)] == [1, 2, 8, 8]
    assert phantom.resolve("tiny", patients=3, videos_per_patient=2).video_counts() == [2, 2, 2]  # unchanged
    with pytest.raises(ValueError):
        phantom.resolve("tiny", video_variability=1.5)
    from fetal_ssl_jax.phantom import cli
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    out = tmp_path / "x"
    args = p.parse_args(["--out", str(out), "--video-patients", "2", "--videos", "3", "--video-variability", "0",
                         "--frames", "4", "--images", "5", "--labelled-patients", "1", "--no-progress"])
    assert cli.run(args, []) == 0
    assert sorted(f.name for f in (out / "videos").glob("*/*.mp4")) == ["P0000_v00.mp4", "P0000_v01.mp4",
                                                                        "P0001_v00.mp4"]
    s = json.loads((out / "phantom.json").read_text())
    assert s["num_video_patients"] == 2 and s["settings"]["video_variability"] == 0.0
    assert {r.split(",")[2] for r in (out / "labels.csv").read_text().splitlines()[1:]} == {"P0002"}  # disjoint
