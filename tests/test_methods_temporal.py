"""Temporal positives: a pretrain step runs on frame pairs from the same video (issue 3).

BYOL and MoCo run on temporal-positive batches in test_methods.py (EMA and queue tests);
this covers the other three joint-embedding methods, one compiled step each. That the
pairs come from the same video and within the window is tested in test_methods.py.
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
from test_methods_helpers import quick_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ensure_synthetic_store(str(tmp_path_factory.mktemp("frames")), 4, 16, 32, seed=0)


@pytest.mark.parametrize("method_name", ["barlowtwins", "vicreg", "simclr"])
def test_step_runs_on_temporal_positives(store, method_name):
    cfg = configuration.load(os.path.join(ROOT, "configs", f"{method_name}.py:tiny"),
                             ["--config.data.temporal_window=3"])
    method = registry.get_method(cfg)
    tx, lr_fn = make_optimizer(cfg.optim, BATCH, int(cfg.train.steps))
    mesh = mesh_lib.make_mesh(1)
    batch = next(iter(pretrain_pipeline.make_dataset(store, cfg.data, BATCH, 1, int(cfg.seed))))
    ranges = store.video_ranges()
    assert (batch["index"] != batch["index2"]).all()  # every video here has more than one frame
    assert (ranges[batch["index"]] == ranges[batch["index2"]]).all()
    assert (np.abs(batch["index"] - batch["index2"]) <= 3).all()

    state = jax.device_put(quick_state(method, tx), mesh_lib.replicated(mesh))  # the step is under test
    step_fn = step_lib.jit_step(step_lib.make_step_fn(method, tx, lr_fn, cfg.aug), mesh)
    model_batch = {k: batch[k] for k in ("view1", "view2", "sample_id")}
    state, metrics = step_fn(state, mesh_lib.to_global(model_batch, mesh), jax.random.key(1))
    assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    assert int(state.step) == 1
