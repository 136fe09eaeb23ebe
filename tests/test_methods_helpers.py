"""Shared helpers of the issue-3 method tests (no tests here): a small video store, batches, EMA maths.

``quick_state`` builds a train state without compiling the full init (random init of
every parameter plus a forward pass), which costs about as much XLA:CPU compile time as
the train step itself; the tests that use it check the step, not the initialiser.
"""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from fetal_ssl_jax import configuration
from fetal_ssl_jax.data import pretrain_pipeline
from fetal_ssl_jax.data.frame_store import FrameStore, FrameStoreWriter
from fetal_ssl_jax.train.state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEO_LENGTHS = (6, 1, 9)  # 16 frames; the 1-frame video has no temporal partner
BATCH = 16


def frame_value(k: int) -> int:
    """Base grey level of global frame k: 15 apart, so a crop tells which frame it came from."""
    return 10 + 15 * k


def tiny_cfg(name: str, **data):
    cfg = configuration.load(os.path.join(ROOT, "configs", f"{name}.py:tiny"))
    cfg.data.update(data)
    return cfg


def build_video_store(path: str) -> FrameStore:
    """Frames = base value +- 3 of texture: identifiable after crop/resize, not constant (BN-safe)."""
    rng = np.random.default_rng(0)
    w = FrameStoreWriter(path, frames_per_shard=7)  # several shards: indices cross shard boundaries
    k = 0
    for v, n in enumerate(VIDEO_LENGTHS):
        frames = [(frame_value(k + i) + rng.integers(-3, 4, (32, 32))).astype(np.uint8) for i in range(n)]
        w.add_video(f"vid{v}", f"pat{v}", frames)
        k += n
    w.close()
    return FrameStore.open(path)


def host_batches(store: FrameStore, cfg, steps: int) -> list[dict[str, np.ndarray]]:
    ds = pretrain_pipeline.make_dataset(store, cfg.data, BATCH, steps, int(cfg.seed))
    return [dict(b) for b in ds]


def model_batch(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: b[k] for k in ("view1", "view2", "sample_id")}


def ema_closed_form(start, history, rates):
    """target_n = prod(tau) target_0 + sum_k (1 - tau_k) prod_{j>k} tau_j online_{k+1}, in float64."""
    def combine(t0, *onl):
        n = len(rates)
        out = np.prod(rates) * np.asarray(t0, np.float64)
        for k in range(n):
            out = out + (1 - rates[k]) * np.prod(rates[k + 1:]) * np.asarray(onl[k], np.float64)
        return out
    return jax.tree.map(combine, start, *history)


def assert_tree_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=0, atol=atol)


def quick_state(method, tx, size: int = 32, seed: int = 0) -> TrainState:
    """Host (numpy) state: He-normal kernels, unit BN scales/variances, zero biases/means."""
    params_s, stats_s, _ = jax.eval_shape(lambda r: method.init(r, jnp.zeros((2, size, size, 1))),
                                          jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = getattr(path[-1], "key", str(path[-1]))
        if name in ("scale", "var"):
            return np.ones(s.shape, s.dtype)
        if len(s.shape) < 2:
            return np.zeros(s.shape, s.dtype)
        fan_in = math.prod(s.shape[:-1])
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), s.shape).astype(s.dtype)

    params = jax.tree_util.tree_map_with_path(fill, params_s)
    stats = jax.tree_util.tree_map_with_path(fill, stats_s)
    extra = jax.jit(lambda p, b: method.init_extra(p, b, None))(params, stats)
    return jax.device_get(TrainState(step=np.zeros((), np.int32), params=params, batch_stats=stats,
                                     opt_state=jax.jit(tx.init)(params), extra=extra))


def assert_same_grads(g4, g1) -> None:
    """Gradients of 4 devices vs 1: each element within 1e-5 of the largest gradient element (the sharded
    program sums the same terms in another order) and 1e-5 relative."""
    flat1, flat4 = jax.tree.leaves(g1), jax.tree.leaves(g4)
    assert len(flat1) == len(flat4) > 0
    scale = max(float(np.max(np.abs(g))) for g in flat1)
    assert scale > 0, "all-zero gradients compare equal whatever the sharding"
    for a, b in zip(flat1, flat4):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * scale)


# The suite's small full step (16 px views, batch 8, a 20-step schedule, one device). One compiled program per
# method and dtype, shared by the tests that need a whole step rather than its gradients (test_bf16.py's tracks,
# test_engine_step.py's non-finite guard): the same closure in one worker, a persistent-cache load in the other.
SMALL_BATCH, SMALL_SIZE, SMALL_STEPS = 8, 16, 20


@functools.lru_cache(maxsize=None)
def small_step(method_name: str, dtype: str = "float32"):
    """(method, tx, mesh, jitted step) of ``method_name``'s tiny config at the small shape above."""
    from fetal_ssl_jax.methods import registry
    from fetal_ssl_jax.train import mesh as mesh_lib, step as step_lib
    from fetal_ssl_jax.train.optimizers import make_optimizer
    cfg = configuration.load(os.path.join(ROOT, "configs", f"{method_name}.py:tiny"),
                             [f"--config.model.dtype={dtype}"])
    cfg.data.image_size = SMALL_SIZE
    method = registry.get_method(cfg)
    tx, lr_fn = make_optimizer(cfg.optim, SMALL_BATCH, SMALL_STEPS)
    mesh = mesh_lib.make_mesh(1)
    compute = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    step = step_lib.jit_step(step_lib.make_step_fn(method, tx, lr_fn, cfg.aug, 0, compute), mesh)
    return method, tx, mesh, step


def small_batch(rng: np.random.Generator, i: int) -> dict[str, np.ndarray]:
    """Batch ``i`` of random views for ``small_step``."""
    b, s = SMALL_BATCH, SMALL_SIZE
    return {"view1": rng.integers(0, 256, (b, s, s), dtype=np.uint8),
            "view2": rng.integers(0, 256, (b, s, s), dtype=np.uint8),
            "sample_id": np.arange(i * b, (i + 1) * b, dtype=np.int32)}
