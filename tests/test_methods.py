"""Issue 3: temporal-positive pairs, BYOL's EMA target, inpainting masks, the small pure pieces.

Compile time dominates on CPU, so the one test that steps a model (BYOL's EMA) runs on
temporal-positive batches and checks several things on one compiled step. MoCo's queue
is in test_methods_queue.py, the kill-and-resume in test_methods_resume.py, and the
other joint-embedding methods on temporal positives in test_engine_step.py (1 vs 4 devices).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fetal_ssl_jax.data import pretrain_pipeline
from fetal_ssl_jax.data.frame_store import FrameStore
from fetal_ssl_jax.methods import registry
from fetal_ssl_jax.methods.byol import cosine_ema_rate
from fetal_ssl_jax.methods.inpainting import erase_mask
from fetal_ssl_jax.methods.moco import enqueue
from fetal_ssl_jax.train import mesh as mesh_lib
from fetal_ssl_jax.train import step as step_lib
from fetal_ssl_jax.train.optimizers import make_optimizer
from test_methods_helpers import (BATCH, assert_tree_close, build_video_store, ema_closed_form, frame_value,
                                  host_batches, model_batch, tiny_cfg)


@pytest.fixture(scope="module")
def video_store(tmp_path_factory) -> FrameStore:
    return build_video_store(str(tmp_path_factory.mktemp("videos")))


# --- temporal positives: the pipeline ------------------------------------------------------------

def test_temporal_pairs_come_from_same_video_within_window(video_store):
    w = 2
    cfg = tiny_cfg("barlowtwins", temporal_window=w, image_size=16)
    ranges = video_store.video_ranges()
    offsets = set()
    for b in host_batches(video_store, cfg, 4):
        for r in range(BATCH):
            i, j = int(b["index"][r]), int(b["index2"][r])
            assert tuple(ranges[i]) == tuple(ranges[j]), "partner from another video"
            assert abs(i - j) <= w
            start, end = ranges[i]
            assert (i != j) or (end - start == 1), "a partner exists but the frame was paired with itself"
            offsets.add(j - i)
            # the views really are those frames (texture +-3 survives crop/resize within its range)
            for view, k in (("view1", i), ("view2", j)):
                px = b[view][r].astype(int)
                assert frame_value(k) - 3 <= px.min() and px.max() <= frame_value(k) + 3
    assert {-2, -1, 1, 2} <= offsets, offsets  # both directions, the whole window

    off = tiny_cfg("barlowtwins", temporal_window=0, image_size=16)
    for b in host_batches(video_store, off, 2):
        np.testing.assert_array_equal(b["index"], b["index2"])


def test_temporal_pairs_same_on_any_process_count(video_store):
    """Process p's rows are rows [p*B/P, (p+1)*B/P) of the single-process global batch."""
    cfg = tiny_cfg("barlowtwins", temporal_window=3, image_size=16)
    whole = pretrain_pipeline.PretrainBatches(video_store, cfg.data, BATCH, 0)(5)
    halves = [pretrain_pipeline.PretrainBatches(video_store, cfg.data, BATCH, 0, p, 2)(5) for p in range(2)]
    for key in ("index", "index2", "view1", "view2"):
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])


# --- rotation (host side, before the crop) ---------------------------------------------------------

def _principal_axis_deg(img: np.ndarray) -> float:
    """Orientation of the bright pixels' principal axis, degrees counter-clockwise, in (-90, 90]."""
    ys, xs = np.nonzero(img > 127)
    x, y = xs - xs.mean(), -(ys - ys.mean())  # y up, so counter-clockwise is positive
    cov = np.cov(np.stack([x, y]))
    w, v = np.linalg.eigh(cov)
    a = np.degrees(np.arctan2(v[1, -1], v[0, -1]))
    return (a + 90) % 180 - 90


def test_rotation_turns_the_image_by_the_drawn_angle():
    from fetal_ssl_jax.data import host_augment
    bar = np.zeros((63, 63), np.uint8)
    bar[29:34, 6:57] = 255  # horizontal bar through the centre: axis 0 degrees
    assert abs(_principal_axis_deg(bar)) < 0.5
    for seed in range(6):
        out = host_augment.maybe_rotate(bar, np.random.default_rng(seed), 80.0)
        angle = np.random.default_rng(seed).uniform(-80.0, 80.0)  # the draw maybe_rotate makes
        diff = (_principal_axis_deg(out) - angle + 90) % 180 - 90
        assert abs(diff) < 2.0, (seed, angle, _principal_axis_deg(out))
        assert out.shape == bar.shape and out.dtype == np.uint8
    rng = np.random.default_rng(0)
    assert host_augment.maybe_rotate(bar, rng, 0.0) is bar
    assert rng.random() == np.random.default_rng(0).random()  # rotation 0 draws nothing


def test_rotation_off_leaves_the_pipeline_unchanged(video_store):
    """Configs written before the rotation key existed give the same batches as rotation=0."""
    old = tiny_cfg("barlowtwins", image_size=16)
    del old.data["rotation"]
    new = tiny_cfg("barlowtwins", image_size=16, rotation=0.0)
    rot = tiny_cfg("barlowtwins", image_size=16, rotation=90.0)
    a = pretrain_pipeline.PretrainBatches(video_store, old.data, BATCH, 0)(3)
    b = pretrain_pipeline.PretrainBatches(video_store, new.data, BATCH, 0)(3)
    c = pretrain_pipeline.PretrainBatches(video_store, rot.data, BATCH, 0)(3)
    for key in ("view1", "view2", "index"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["view1"], c["view1"])


# --- small pure pieces -----------------------------------------------------------------------------

def test_cosine_ema_rate_schedule():
    ks = np.arange(0, 11)
    got = np.asarray(cosine_ema_rate(jnp.asarray(ks), 10, 0.996))
    want = 1 - (1 - 0.996) * (np.cos(np.pi * ks / 10) + 1) / 2
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert got[0] == np.float32(0.996) and got[-1] == 1.0 and np.all(np.diff(got) >= 0)
    assert float(cosine_ema_rate(jnp.asarray(15), 10, 0.996)) == 1.0  # clipped after the end


def test_enqueue_writes_in_order_and_wraps():
    queue = jnp.zeros((6, 2))
    ptr = jnp.zeros((), jnp.int32)
    history = []
    for s in range(4):
        keys = jnp.stack([jnp.arange(4.0) + 10 * s, -jnp.arange(4.0)], axis=1)  # rows 10s+0..3
        queue, ptr = enqueue(queue, ptr, keys)
        history.append(np.asarray(queue[:, 0]))
    # 6 slots, 4 keys per step: the oldest keys are replaced first, in batch order.
    np.testing.assert_array_equal(history[0], [0, 1, 2, 3, 0, 0])
    np.testing.assert_array_equal(history[1], [12, 13, 2, 3, 10, 11])
    np.testing.assert_array_equal(history[2], [12, 13, 20, 21, 22, 23])
    np.testing.assert_array_equal(history[3], [30, 31, 32, 33, 22, 23])
    assert int(ptr) == (4 * 4) % 6


def test_erase_mask_counts_areas_and_aspects():
    mask_fn = jax.jit(erase_mask, static_argnums=(1, 2, 3, 4, 5, 6))  # one compile beats ~40 eager ops
    # one square of exactly 10% -> round(sqrt(102.4)) = 10 -> 100 pixels
    m = np.asarray(mask_fn(jax.random.key(0), 8, 32, 32, (1, 1), (0.1, 0.1), (1.0, 1.0)))
    assert m.shape == (8, 32, 32, 1) and m.dtype == bool
    np.testing.assert_array_equal(m.sum(axis=(1, 2, 3)), 100)
    for s in m[..., 0]:  # a single axis-aligned 10x10 box
        rows, cols = np.nonzero(s.any(axis=1))[0], np.nonzero(s.any(axis=0))[0]
        assert np.ptp(rows) == 9 and np.ptp(cols) == 9
    # several rectangles: union between one rectangle's minimum and the sum of the maxima
    m = np.asarray(mask_fn(jax.random.key(1), 64, 32, 32, (2, 3), (0.02, 0.05), (0.5, 2.0)))
    frac = m.mean(axis=(1, 2, 3))
    assert frac.min() > 0.0 and frac.max() <= 3 * 0.05 * 1.3
    none = np.asarray(mask_fn(jax.random.key(2), 4, 32, 32, (0, 0), (0.1, 0.2), (1.0, 1.0)))
    assert not none.any()


def test_inpainting_loss_region_and_encoder_layout():
    """Erased-only vs whole-image loss, and the exported encoder is the plain ResNet layout."""
    from fetal_ssl_jax.models import build_backbone

    cfg = tiny_cfg("inpainting")
    cfg.inpainting.update(num_rects=(1, 1), area=(0.25, 0.25), aspect=(1.0, 1.0), fill="zero")
    method = registry.get_method(cfg)
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 1))
    key = jax.random.key(3)

    def run(region: str, err_inside: float, err_outside: float):
        """The loss with a stand-in network whose reconstruction error is known per region."""
        method.mcfg.loss_region = region

        def fn(x, key):
            x_in, erased = method.corrupt(x, key)  # the loss draws the same mask from the same key
            x_hat = jnp.where(erased, x + err_inside, x + err_outside)
            method.apply = lambda p, bs, xi, train=True: ({"h": jnp.ones((xi.shape[0], 4)), "x_hat": x_hat}, bs)
            out = method.loss({}, {}, {}, {"view1": x}, key, 0)
            loss, metrics = out.loss, out.metrics
            return loss, metrics, erased, x_in

        return jax.jit(fn)(x, key)

    loss, metrics, erased, x_in = run("all", 1.0, 1.0)
    erased = np.asarray(erased)
    np.testing.assert_allclose(float(loss), 1.0, rtol=1e-6)
    assert np.all(np.asarray(x_in)[erased] == 0.0) and np.array_equal(np.asarray(x_in)[~erased], np.asarray(x)[~erased])
    np.testing.assert_allclose(float(metrics["erased_fraction"]), erased.mean(), rtol=1e-6)
    assert 0.2 < erased.mean() < 0.3
    loss, metrics, _, _ = run("erased", 2.0, 0.0)  # error only inside the erased region
    np.testing.assert_allclose(float(loss), 4.0, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["mse_all"]), 4.0 * erased.mean(), rtol=1e-5)
    loss, _, _, _ = run("all", 2.0, 0.0)
    np.testing.assert_allclose(float(loss), 4.0 * erased.mean(), rtol=1e-5)

    for name in ("autoencoder", "inpainting"):
        m = registry.get_method(tiny_cfg(name))
        shapes = jax.eval_shape(lambda r: m.init(r, jnp.zeros((2, 32, 32, 1))), jax.random.key(0))
        enc = m.encoder_variables(shapes[0], shapes[1])
        ref = jax.eval_shape(lambda r: build_backbone(m.cfg.model).init(r, jnp.zeros((2, 32, 32, 1)), train=True),
                             jax.random.key(0))
        assert jax.tree.structure(enc) == jax.tree.structure(dict(ref))
        assert jax.tree.map(lambda a: a.shape, enc) == jax.tree.map(lambda a: a.shape, dict(ref))


# --- BYOL: EMA target (on temporal-positive batches) ---------------------------------------------------

def test_byol_target_is_closed_form_ema_and_tau_follows_schedule(video_store):
    steps = 4
    cfg = tiny_cfg("byol", temporal_window=2)
    cfg.byol.tau_base = 0.5  # large moves, so a wrong tau or order shows
    cfg.train.steps = steps
    method = registry.get_method(cfg)
    tx, lr_fn = make_optimizer(cfg.optim, BATCH, steps)
    mesh = mesh_lib.make_mesh(1)
    state = step_lib.init_state(method, tx, jax.random.key(0), (2, 32, 32, 1), mesh)

    enc = lambda p: {k: p[k] for k in ("backbone", "head")}
    # a real copy: equal values, distinct buffers (donation would otherwise free the target)
    assert_tree_close(state.extra["target_params"], enc(state.params), 0)
    ptrs = lambda t: {x.unsafe_buffer_pointer() for x in jax.tree.leaves(t)}
    assert not ptrs(state.extra["target_params"]) & ptrs(state.params)
    target0 = jax.device_get(state.extra["target_params"])
    tbs0 = jax.device_get(state.extra["target_batch_stats"])

    step_fn = step_lib.jit_step(step_lib.make_step_fn(method, tx, lr_fn, cfg.aug), mesh)
    online, taus = [], []
    for k, b in enumerate(host_batches(video_store, cfg, steps)):
        assert (b["index"] != b["index2"]).any()  # temporal positives are in use
        state, metrics = step_fn(state, mesh_lib.to_global(model_batch(b), mesh), jax.random.key(1))
        assert bool(metrics["finite"]), k
        taus.append(float(metrics["tau"]))
        online.append(jax.device_get(enc(state.params)))
    want_tau = [1 - 0.5 * (np.cos(np.pi * k / steps) + 1) / 2 for k in range(steps)]
    np.testing.assert_allclose(taus, want_tau, atol=1e-7)
    assert taus[0] == 0.5 and taus[-1] < 1.0

    got = jax.device_get(state.extra["target_params"])
    assert_tree_close(got, ema_closed_form(target0, online, np.asarray(taus, np.float64)), atol=2e-6)
    # the target's own BN statistics moved (train mode) and differ from the online network's
    tbs = jax.device_get(state.extra["target_batch_stats"])
    moved = lambda a, b: any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert moved(tbs, tbs0)
    assert moved(tbs, enc(jax.device_get(state.batch_stats)))


@pytest.mark.parametrize("size", [32, 112])
def test_autoencoder_reconstructs_any_image_size(size):
    """The decoder's seed map adapts (112 px = 7 * 2**4), so the output is the input's size (shapes only)."""
    cfg = tiny_cfg("autoencoder", image_size=size)
    m = registry.get_method(cfg)
    x = jnp.zeros((2, size, size, 1))
    variables = jax.eval_shape(lambda r: m.model.init(r, x, train=True), jax.random.key(0))
    out = jax.eval_shape(lambda v: m.model.apply(v, x, train=True, mutable=["batch_stats"])[0], variables)
    assert out["x_hat"].shape == (2, size, size, 1)

