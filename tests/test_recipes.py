"""The methods' recipes as their references state them: optimizer options (square-root LR scaling, a separate
LR for biases and BN), schedules in epochs of the store, SimCLR-v2's BatchNorm, and the grid options that
give every method the same pretraining compute."""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fetal_ssl_jax import configuration
from fetal_ssl_jax.experiments import grid, jobs as jobs_lib
from fetal_ssl_jax.methods import registry
from fetal_ssl_jax.models import initialise
from fetal_ssl_jax.train import optimizers
from fetal_ssl_jax.train.pretrain import resolve_epochs

ROOT = jobs_lib.ROOT


def _cfg(spec: str, *overrides: str) -> ml_collections.ConfigDict:
    return configuration.load(os.path.join(ROOT, "configs", spec), list(overrides))


def _optim(**kw) -> ml_collections.ConfigDict:
    o = _cfg("barlowtwins.py:tiny").optim
    o.update(warmup_steps=0, **kw)
    return o


def test_sqrt_scaling_peak_is_base_times_root_batch():
    assert optimizers.peak_lr(_optim(base_lr=0.075, lr_scaling="sqrt"), 4096) == pytest.approx(0.075 * 64)
    assert optimizers.peak_lr(_optim(base_lr=0.2, lr_batch_scale=256), 512) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="lr_scaling"):
        optimizers.make_optimizer(_optim(lr_scaling="cube"), 64, 10)


@pytest.mark.parametrize("name", ["lars", "adamw", "sgd"])
def test_bias_lr_factor_scales_only_vector_updates(name):
    """Two steps (so momentum / Adam moments matter): 1-D parameters move by exactly factor x, kernels as before."""
    rng = np.random.default_rng(0)
    params = {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
              "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params) for _ in range(2)]

    def updates(factor):
        tx, _ = optimizers.make_optimizer(_optim(name=name, bias_lr_factor=factor, weight_decay=1e-2), 64, 100)
        state, p, out = tx.init(params), params, []
        for g in grads:
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
            out.append(u)
        return out

    base, scaled = updates(1.0), updates(0.024)
    for b, s in zip(base, scaled):
        np.testing.assert_allclose(s["kernel"], b["kernel"], rtol=1e-6)
        np.testing.assert_allclose(s["bias"], 0.024 * b["bias"], rtol=1e-5)
        assert np.abs(b["bias"]).max() > 0


def test_epochs_resolve_to_steps_and_warmup_from_the_store_size():
    cfg = _cfg("barlowtwins.py")  # paper scale: 1000 epochs, 10 warmup (the reference's recipe)
    assert int(cfg.train.steps) == 0 and float(cfg.train.epochs) == 1000
    cfg.train.batch_size = 256
    resolve_epochs(cfg, num_frames=10_000)
    assert int(cfg.train.steps) == math.ceil(1000 * 10_000 / 256)
    assert int(cfg.optim.warmup_steps) == round(10 * 10_000 / 256)
    fixed = _cfg("barlowtwins.py:cpu")  # steps stated: left alone
    resolve_epochs(fixed, num_frames=10_000)
    assert int(fixed.train.steps) == 600 and int(fixed.optim.warmup_steps) == 50
    with pytest.raises(ValueError, match="train.epochs"):
        broken = _cfg("simclr.py", "--config.train.epochs=0")
        resolve_epochs(broken, 100)


def test_paper_recipes_follow_their_references():
    bt, sc, mo = _cfg("barlowtwins.py"), _cfg("simclr.py"), _cfg("moco.py")
    assert float(bt.optim.bias_lr_factor) * float(bt.optim.base_lr) == pytest.approx(0.0048)
    assert float(bt.optim.end_lr_factor) == 0.001
    assert sc.optim.lr_scaling == "sqrt" and float(sc.optim.weight_decay) == 1e-4
    assert int(mo.optim.warmup_steps) == 0 and float(mo.optim.warmup_epochs) == 0
    # lambda * d constant would keep the 8192-wide projector's balance (measured worse at batch 64: kept 0.0051)
    from configs.barlowtwins import scaled_lambda
    assert scaled_lambda(1024) * 1024 == pytest.approx(0.0051 * 8192)
    assert float(_cfg("barlowtwins.py:cpu").barlowtwins.lambd) == 0.0051


def _simclr(ops: str):
    cfg = _cfg("simclr.py:tiny", f"--config.model.ops={ops}")
    method = registry.get_method(cfg)
    x = jax.random.uniform(jax.random.key(1), (2, 8, 32, 32, 1))
    params, stats, extra = initialise.run_init(lambda k: method.init(k, x[0]), jax.random.key(0))
    return method, params, stats, extra, x[0], x[1]


def test_simclr_batchnorm_runs_over_both_views_and_keeps_scale_only(ops="auto"):
    """The loss equals the objective of one forward of the concatenated 2B batch (statistics over both views);
    with per-view statistics (BarlowTwins' way) it would differ by O(1) here, as the views differ in scale. The
    joint path is the same whatever ``model.ops`` (one concatenated batch), so one kernel choice is checked."""
    method, params, stats, extra, v1, v2 = _simclr(ops)
    v2 = 3.0 * v2 + 1.0  # views whose per-view statistics differ a lot
    bn_out = params["head"]["bn_out"]
    assert set(bn_out) == {"scale"}  # gamma kept, no beta
    # jitted: op by op, these forwards compiled ~220 single ops (~10 s); as programs, 3 compiles
    loss = jax.jit(lambda p, s, e, a, b: method.loss(p, s, e, {"view1": a, "view2": b}, jax.random.key(2),
                                                     jnp.int32(0)))
    apply, objective = jax.jit(method.apply), jax.jit(method.objective)
    out = loss(params, stats, extra, v1, v2)
    joint, joint_stats = apply(params, stats, jnp.concatenate([v1, v2]))
    z = joint["z"].astype(jnp.float32)
    ref, _ = objective(z[:8], z[8:])
    np.testing.assert_allclose(out.loss, ref, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(out.batch_stats), jax.tree.leaves(joint_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    (s1, _), (s2, _) = (apply(params, stats, v) for v in (v1, v2))
    per_view, _ = objective(s1["z"].astype(jnp.float32), s2["z"].astype(jnp.float32))
    assert abs(float(per_view) - float(ref)) > 1e-3


def test_cpu_grid_gives_equal_compute_budgets_and_shares_features(tmp_path):
    cfg = _cfg("paper_grid.py:cpu")
    js = grid.expand(cfg, str(tmp_path))
    pre = {j.info["method"]: j.args for j in js if j.kind == "pretrain"}
    steps = {m: int(next(a for a in args[::-1] if a.startswith("--config.train.steps=")).split("=")[1])
             for m, args in pre.items()}
    from configs.paper_grid import CPU_STEPS
    assert steps == CPU_STEPS and len(steps) == 7
    labelled = next(j for j in js if j.id == "data/labelled").workdir
    for j in (j for j in js if j.kind == "pretrain"):  # the periodic kNN evaluator reads the labelled store
        assert "--config.monitor.every=100" in j.args and f"--config.monitor.labelled_store={labelled}" in j.args
        assert "data/labelled" in j.deps
    ev = [j for j in js if j.kind == "eval"]
    by = {}
    for j in ev:
        by.setdefault(j.info["protocol"], set()).add(j.info["fraction"])
    assert by == {"finetune": {1.0, 10.0}, "probe": {1.0, 10.0, 100.0}, "knn": {1.0, 10.0, 100.0}}
    assert len(ev) == 8 * 3 * (2 + 3 + 3)
    cache = f"--config.data.feature_cache={tmp_path}/features"
    assert all((cache in j.args) == (j.info["protocol"] != "finetune") for j in ev)


def test_cpu_grid_trains_every_method_with_one_optimizer_recipe(tmp_path):
    """The CPU comparison replaces each method's optimizer whole (AdamW, one LR for all parameters, cosine to 0):
    no method keeps a LARS-specific knob of its reference (BarlowTwins' bias LR, the 0.001x end)."""
    cfg = _cfg("paper_grid.py:cpu")
    seen = set()
    for j in grid.expand(cfg, str(tmp_path)):
        if j.kind != "pretrain":
            continue
        spec = j.args[j.args.index("--config") + 1]
        overrides = [a for a in j.args if a.startswith("--config.") and not a.startswith("--config.data.store")
                     and not a.startswith("--config.monitor.")]
        c = configuration.load(spec, overrides)
        o = c.optim
        seen.add((o.name, float(o.base_lr), float(o.weight_decay), float(o.bias_lr_factor), float(o.end_lr_factor),
                  o.get("lr_scaling", "linear"), int(c.train.batch_size), float(c.model.width)))
    assert seen == {("adamw", 4e-3, 1e-4, 1.0, 0.0, "linear", 64, 0.5)}
