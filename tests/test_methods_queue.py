"""MoCo-v2's queue: order and contents on 1 and 4 devices, and the gradients of its first step (MoCo's
1-vs-4-device gradient check, the one test_engine_step.py makes for the other methods); the loss variants
build (issue 3)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fetal_ssl_jax.methods import registry
from fetal_ssl_jax.train import mesh as mesh_lib
from fetal_ssl_jax.train import step as step_lib
from fetal_ssl_jax.train.optimizers import make_optimizer
from test_methods_helpers import (BATCH, assert_same_grads, assert_tree_close, build_video_store, ema_closed_form,
                                  host_batches, model_batch, quick_state, tiny_cfg)


@pytest.fixture(scope="module")
def video_store(tmp_path_factory):
    return build_video_store(str(tmp_path_factory.mktemp("videos")))


# --- MoCo: queue on 1 and 4 devices (on temporal-positive batches) ------------------------------------------

def _run_moco(method, tx, lr_fn, cfg, init_host, batches, n_devices):
    mesh = mesh_lib.make_mesh(n_devices)
    state = jax.device_put(init_host, mesh_lib.replicated(mesh))
    step_fn = step_lib.jit_step(step_lib.make_step_fn(method, tx, lr_fn, cfg.aug), mesh)
    out = []
    for b in batches:
        state, metrics = step_fn(state, mesh_lib.to_global(model_batch(b), mesh), jax.random.key(1))
        assert bool(metrics["finite"])
        out.append(dict(queue=np.asarray(state.extra["queue"]), ptr=int(state.extra["queue_ptr"]),
                        loss=float(metrics["loss"]), params=jax.device_get(state.params),
                        key_params=jax.device_get(state.extra["key_params"]),
                        momentum=jax.device_get(_momentum(state.opt_state))))
    return out


def _momentum(opt_state):
    """SGD's momentum buffer (optax ``TraceState``). It accumulates before the LR is applied, so after the
    first step it holds that step's gradient plus the weight decay term (identical on any device count)."""
    traces = [s.trace for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.TraceState))
              if isinstance(s, optax.TraceState)]
    assert len(traces) == 1, opt_state
    return traces[0]


def test_moco_queue_order_and_contents_same_on_one_and_four_devices(video_store):
    steps = 6
    cfg = tiny_cfg("moco", temporal_window=2)
    cfg.train.steps = steps
    method = registry.get_method(cfg)
    k = int(cfg.moco.queue_size)
    assert k % BATCH == 0 and k // BATCH < steps  # the queue wraps during the test
    tx, lr_fn = make_optimizer(cfg.optim, BATCH, steps)
    init_host = quick_state(method, tx)  # the init's own compile is paid in the BYOL test; here the step is tested
    assert init_host.extra["queue"].shape == (k, cfg.moco.proj_dims[-1]) and int(init_host.extra["queue_ptr"]) == 0
    batches = host_batches(video_store, cfg, steps)

    one = _run_moco(method, tx, lr_fn, cfg, init_host, batches, 1)
    four = _run_moco(method, tx, lr_fn, cfg, init_host, batches, 4)

    assert cfg.optim.name == "sgd" and float(cfg.optim.momentum) > 0
    assert_same_grads(four[0]["momentum"], one[0]["momentum"])  # the first step's gradients, 1 vs 4 devices

    prev = np.asarray(init_host.extra["queue"])
    for s, (a, b) in enumerate(zip(one, four)):
        start = (s * BATCH) % k
        assert a["ptr"] == b["ptr"] == (start + BATCH) % k
        written = np.zeros(k, bool)
        written[start:start + BATCH] = True
        np.testing.assert_array_equal(a["queue"][~written], prev[~written])  # only the oldest slots replaced
        assert not np.allclose(a["queue"][written], prev[written])
        np.testing.assert_allclose(np.linalg.norm(a["queue"][written], axis=1), 1.0, atol=1e-5)  # keys are unit
        np.testing.assert_allclose(b["queue"], a["queue"], rtol=0, atol=2e-5)  # same keys, same slots
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
        prev = a["queue"]

    # the key encoder is the EMA (constant m) of the query encoder's history
    m = float(cfg.moco.momentum)
    want = ema_closed_form(init_host.extra["key_params"], [o["params"] for o in one], np.full(steps, m))
    assert_tree_close(one[-1]["key_params"], want, atol=2e-6)


@pytest.mark.parametrize("overrides", [dict(symmetric=True, momentum_schedule="cosine"), dict(shuffle_bn_group=0)])
def test_moco_variants_trace(overrides):
    """The symmetric loss, cosine momentum and global-BN fallback build (shapes only, no compile)."""
    cfg = tiny_cfg("moco")
    cfg.moco.update(overrides)
    method = registry.get_method(cfg)
    x = jax.ShapeDtypeStruct((BATCH, 32, 32, 1), jnp.float32)
    params, bs, extra = jax.eval_shape(lambda r: method.init(r, jnp.zeros((2, 32, 32, 1))), jax.random.key(0))
    out = jax.eval_shape(
        lambda p, b, e, v1, v2: method.loss(p, b, e, {"view1": v1, "view2": v2}, jax.random.key(0), jnp.int32(3)),
        params, bs, extra, x, x)
    loss, metrics, new_extra = out.loss, out.metrics, out.extra
    assert loss.shape == () and metrics["momentum"].shape == ()
    assert jax.tree.map(lambda a: a.shape, new_extra) == jax.tree.map(lambda a: a.shape, extra)
    if overrides.get("symmetric"):
        assert {"loss_12", "loss_21"} <= set(metrics)
    assert method.groups(BATCH) == (1 if cfg.moco.shuffle_bn_group == 0 else BATCH // cfg.moco.shuffle_bn_group)
