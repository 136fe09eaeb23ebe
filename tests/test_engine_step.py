"""The shared step: same loss and gradients on 1 and 4 devices, for every SSL method, on temporal-positive
batches (view 2 is another frame of the same video, as ``data.temporal_window`` > 0 gives).

MoCo's 1-vs-4-device gradients are compared in test_methods_queue.py, from the momentum buffer of the very
step whose queue that test follows (one compiled step per device count serves both checks). The step
program does not depend on how the views were paired, so temporal positives cost no extra compile here.
"""
from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from fetal_ssl_jax import configuration
from fetal_ssl_jax.data import pretrain_pipeline
from fetal_ssl_jax.data.synthetic_store import ensure_synthetic_store
from fetal_ssl_jax.methods import registry
from fetal_ssl_jax.train import mesh as mesh_lib
from fetal_ssl_jax.train import step as step_lib
from fetal_ssl_jax.train.optimizers import make_optimizer

from test_methods_helpers import SMALL_SIZE, assert_same_grads, quick_state, small_batch, small_step

pytestmark = pytest.mark.conv_paths  # `make test-conv-paths` runs this module under XLA and without the kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SSL_METHODS = ("barlowtwins", "vicreg", "simclr", "byol", "autoencoder", "inpainting")  # moco: see above
WINDOW, BATCH = 3, 16


@pytest.fixture(scope="module")
def temporal_batch(tmp_path_factory) -> dict[str, np.ndarray]:
    """One pipeline batch of temporal positives from a small simulated store (4 videos x 16 frames, 32 px)."""
    store = ensure_synthetic_store(str(tmp_path_factory.mktemp("frames")), 4, 16, 32, seed=0)
    cfg = configuration.load(os.path.join(ROOT, "configs", "barlowtwins.py:tiny"),
                             [f"--config.data.temporal_window={WINDOW}"])
    batch = next(iter(pretrain_pipeline.make_dataset(store, cfg.data, BATCH, 1, int(cfg.seed))))
    ranges = store.video_ranges()
    assert (batch["index"] != batch["index2"]).all()  # every video here has more than one frame
    assert (ranges[batch["index"]] == ranges[batch["index2"]]).all()
    assert (np.abs(batch["index"] - batch["index2"]) <= WINDOW).all()
    return {k: batch[k] for k in ("view1", "view2", "sample_id")}


def _setup(method_name: str, host_batch: dict[str, np.ndarray]):
    cfg = configuration.load(os.path.join(ROOT, "configs", f"{method_name}.py:tiny"))
    method = registry.get_method(cfg)
    tx, lr_fn = make_optimizer(cfg.optim, BATCH, int(cfg.train.steps))
    return cfg, method, tx, lr_fn, host_batch


def _grads_on(n_devices: int, method_name: str, host_batch: dict[str, np.ndarray]):
    cfg, method, tx, lr_fn, host_batch = _setup(method_name, host_batch)
    mesh = mesh_lib.make_mesh(n_devices)
    # A host-built state (tests/test_methods_helpers.quick_state): compiling the full initialiser twice
    # per method cost more than the step under test; the initialiser is covered by every CLI test.
    state = quick_state(method, tx, size=host_batch["view1"].shape[1])
    batch = mesh_lib.to_global(host_batch, mesh)
    rep = mesh_lib.replicated(mesh)
    fn = jax.jit(mesh_lib.under_mesh(step_lib.make_grads_fn(method, cfg.aug), mesh),
                 in_shardings=(rep, mesh_lib.batch_sharding(mesh), rep), out_shardings=rep)
    (loss, _), grads = fn(state, batch, jax.random.key(1))
    return float(loss), jax.device_get(grads)


@pytest.mark.parametrize("method_name", SSL_METHODS)
def test_one_vs_four_devices_same_loss_and_grads(method_name, temporal_batch):
    assert len(jax.devices()) >= 4, "conftest sets 4 fake CPU devices"
    l1, g1 = _grads_on(1, method_name, temporal_batch)
    l4, g4 = _grads_on(4, method_name, temporal_batch)
    assert np.isfinite(l1)
    np.testing.assert_allclose(l4, l1, rtol=1e-5)
    assert_same_grads(g4, g1)


def test_nonfinite_loss_leaves_state_untouched():
    """A non-finite loss skips the update: parameters, statistics, optimizer state and step stay as they were.
    The NaN comes from one poisoned weight of the projector head's last layer, through the suite's small
    BarlowTwins step (test_methods_helpers.small_step, compiled once for this and test_bf16.py); the loop's NaN
    injection (``train.debug_nan_step``, a NaN parameter) is the CLI test's (test_engine_cli.py)."""
    method, tx, mesh, step = small_step("barlowtwins")
    host = quick_state(method, tx, size=SMALL_SIZE)
    kernel = np.array(host.params["head"]["dense_out"]["kernel"])
    kernel[0, 0] = np.nan
    host.params["head"]["dense_out"]["kernel"] = kernel
    state = jax.device_put(host, mesh_lib.replicated(mesh))
    new_state, metrics = step(state, mesh_lib.to_global(small_batch(np.random.default_rng(0), 0), mesh),
                              jax.random.key(1))
    assert not bool(metrics["finite"]) and np.isnan(float(metrics["loss"]))
    after = jax.device_get(new_state)
    assert int(after.step) == 0
    for part in ("params", "batch_stats", "opt_state"):  # np.testing counts NaN == NaN in the same place
        for a, b in zip(jax.tree.leaves(getattr(host, part)), jax.tree.leaves(getattr(after, part)), strict=True):
            np.testing.assert_array_equal(a, b)


def test_lars_masks_one_dimensional_params():
    from fetal_ssl_jax.train.optimizers import matrix_mask, schedule
    import ml_collections
    mask = matrix_mask({"kernel": np.zeros((3, 3, 1, 4)), "bias": np.zeros(4), "scale": np.zeros(4)})
    assert mask == {"kernel": True, "bias": False, "scale": False}
    cfg = ml_collections.ConfigDict(dict(base_lr=0.2, lr_batch_scale=256, warmup_steps=10, end_lr_factor=0.0))
    lr = schedule(cfg, global_batch=512, total_steps=100)
    assert float(lr(0)) == 0.0
    np.testing.assert_allclose(float(lr(10)), 0.4, rtol=1e-6)  # peak = base * 512 / 256, per step
    np.testing.assert_allclose(float(lr(55)), 0.2, rtol=1e-2)   # half-way through the cosine
    assert float(lr(100)) < 1e-6


def test_loop_logs_every_rankme_step():
    """RankMe is computed on steps that complete a multiple of rankme_every; those steps must be logged even
    when log_every does not divide them (with log_every 10 and rankme_every 50 it was never logged)."""
    from fetal_ssl_jax.train.loop import should_log
    logged = [d for d in range(1, 31) if should_log(d, 30, log_every=4, rankme_every=7)]
    assert logged == [4, 7, 8, 12, 14, 16, 20, 21, 24, 28, 30]
    assert [d for d in range(1, 11) if should_log(d, 10, 3)] == [3, 6, 9, 10]
