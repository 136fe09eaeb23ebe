"""Builds the jitted steps the engine runs, on abstract inputs, for tests that lower them without hardware.

Used by test_export_lowering.py in-process (``jax.export`` for CUDA and TPU under an ``AbstractMesh``) and
in its subprocess (the same steps compiled for 8 fake CPU devices, to read the collectives XLA inserts).
Each builder goes through the library's own code path (config files, ``methods.registry``,
``train.step.make_step_fn`` / ``jit_step`` / ``abstract_state``, ``evaluate.finetune.run_config``,
``evaluate.linear_probe._fit``) and returns ``(jitted_fn, args, kwargs)`` of ShapeDtypeStructs with
shardings: nothing of the model's size is allocated. Kept in tests/ (not the library): only tests need it.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHODS = ("autoencoder", "inpainting", "simclr", "moco", "byol", "vicreg", "barlowtwins")
STEPS = METHODS + ("finetune", "probe")
NUM_CLASSES = 5  # the labelled store's planes (data.labelled_store.DEFAULT_CLASSES)
NUM_FRAMES = 200_000  # a frame store's size, for recipes stated in epochs (only the LR schedule's constants)


@dataclasses.dataclass
class Built:
    """A jitted step and abstract arguments to trace it with."""
    name: str
    fn: Callable                      # the jax.jit-wrapped function (what jax.export takes)
    args: tuple                       # ShapeDtypeStructs (with shardings where the engine gives them)
    kwargs: dict                      # static keyword arguments (the probe's sizes)
    state_argnums: tuple[int, ...]    # positional arguments the engine donates
    batch_argnums: tuple[int, ...]    # positional arguments split over 'data'
    forward: Callable | None = None   # jitted (state, batch, rng) -> (loss, batch_stats): no gradient
    dtype: str = "float32"            # the model's compute dtype
    global_batch: int = 0


def _with_ops_and_dtype(cfg: ml_collections.ConfigDict, platform: str) -> ml_collections.ConfigDict:
    from fetal_ssl_jax import configuration
    cfg.model.ops = "xla"  # what GPUs and TPUs run (models.ops): no CPU custom call can be chosen
    configuration.resolve_model_dtype(cfg, platform)  # 'auto' -> bfloat16 on cuda/tpu (float32 on cpu)
    return cfg


def pretrain_config(method: str, variant: str = "", platform: str = "cuda") -> ml_collections.ConfigDict:
    from fetal_ssl_jax import configuration
    spec = os.path.join(ROOT, "configs", f"{method}.py") + (f":{variant}" if variant else "")
    return _with_ops_and_dtype(configuration.load(spec), platform)


def finetune_config(variant: str = "", platform: str = "cuda") -> ml_collections.ConfigDict:
    """The run config the fine-tune loop sees for an SSL encoder pretrained at this variant's size
    (its model config brings the resolved dtype, as ``pretrain`` saves it), through ``run_config``."""
    from fetal_ssl_jax.evaluate import defaults, finetune, init as init_lib
    cfg = defaults.apply_variant(defaults.eval_base("finetune"), variant)
    cfg.model.ops = "xla"
    enc = pretrain_config("simclr", variant, platform)
    init = init_lib.Init(kind="ssl", method="simclr", model_cfg=enc.model, variables=None, mean=float(enc.aug.mean),
                         std=float(enc.aug.std), image_size=int(enc.data.image_size))
    steps = 1000
    return finetune.run_config(cfg, init, NUM_CLASSES, np.ones(NUM_CLASSES), steps)


def _batch(pretrain: bool, global_batch: int, size: int, sharding) -> dict[str, Any]:
    """What ``mesh.to_global`` hands the step: the pipeline's batch dict (its int64 host indices arrive as int32)."""
    sds = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)  # noqa: E731
    images = lambda: sds((global_batch, size, size), jnp.uint8)  # noqa: E731
    ids = lambda: sds((global_batch,), jnp.int32)  # noqa: E731
    if pretrain:  # data.pretrain_pipeline
        return {"view1": images(), "view2": images(), "sample_id": ids(), "index": ids(), "index2": ids()}
    return {"image": images(), "label": ids(), "sample_id": ids()}  # data.labelled_pipeline


def build_train_step(cfg: ml_collections.ConfigDict, mesh, global_batch: int, name: str = "",
                     pretrain: bool = True) -> Built:
    """The loop's step (``train.loop.train_loop``), jitted as the loop jits it, on abstract inputs."""
    from fetal_ssl_jax.methods.registry import get_method
    from fetal_ssl_jax.train import mesh as mesh_lib, step as step_lib
    from fetal_ssl_jax.train.loop import compute_dtype, embed_rows
    from fetal_ssl_jax.train.optimizers import make_optimizer

    cfg.train.batch_size = int(global_batch)
    if pretrain:  # a paper-scale recipe in epochs of the store -> steps, as train.pretrain does
        from fetal_ssl_jax.train.pretrain import resolve_epochs
        resolve_epochs(cfg, NUM_FRAMES)
    method = get_method(cfg)
    total_steps = int(cfg.train.steps)
    tx, lr_fn = make_optimizer(cfg.optim, global_batch, total_steps)
    dtype = compute_dtype(cfg)
    size = int(cfg.data.image_size)
    state = step_lib.abstract_state(method, tx, (2, size, size, 1), mesh)
    rep, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
    batch = _batch(pretrain, global_batch, size, data)
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)
    step_fn = step_lib.make_step_fn(method, tx, lr_fn, cfg.get("aug"), embed_rows(cfg), dtype)
    grads_fn = step_lib.make_grads_fn(method, cfg.get("aug"), dtype)

    def forward(state, batch, rng):  # the loss and the new BatchNorm statistics; XLA drops the unused backward
        (loss, out), _ = grads_fn(state, batch, rng)
        return loss, out.batch_stats

    fwd = jax.jit(mesh_lib.under_mesh(forward, mesh), in_shardings=(rep, data, rep), out_shardings=rep)
    return Built(name or cfg.method, step_lib.jit_step(step_fn, mesh), (state, batch, rng), {}, (0,), (1,),
                 fwd, str(jnp.dtype(dtype)), global_batch)


def build_probe_step(num_train: int, num_val: int, feature_dim: int, variant: str = "") -> Built:
    """``linear_probe._fit`` (all epochs of the head, one jitted scan) at the probe config's sizes."""
    from fetal_ssl_jax.evaluate import defaults, linear_probe
    pcfg = defaults.apply_variant(defaults.eval_base("probe"), variant).probe
    batch = num_train if int(pcfg.batch_size) <= 0 else min(int(pcfg.batch_size), num_train)
    epochs = int(pcfg.epochs)
    tx = linear_probe._optimizer(pcfg, epochs * -(-num_train // batch))
    f32 = jnp.float32
    args = (jax.ShapeDtypeStruct((num_train, feature_dim), f32), jax.ShapeDtypeStruct((num_train,), jnp.int32),
            jax.ShapeDtypeStruct((num_val, feature_dim), f32), jax.ShapeDtypeStruct((NUM_CLASSES,), f32),
            jax.ShapeDtypeStruct((), jax.random.key(0).dtype))
    kwargs = dict(num_classes=NUM_CLASSES, epochs=epochs, batch=batch, tx=tx)
    return Built("probe", linear_probe._fit, args, kwargs, (), (), None, "float32", batch)


def build(name: str, mesh, per_device_batch: int, variant: str = "", platform: str = "cuda") -> Built:
    """One of ``STEPS`` at a config variant ('' = the paper's ResNet-50 at 256 px), global batch =
    ``per_device_batch`` x the mesh's devices."""
    global_batch = per_device_batch * int(mesh.size)
    if name == "probe":
        from fetal_ssl_jax.models import feature_dim
        cfg = finetune_config(variant, platform)
        return build_probe_step(num_train=16 * global_batch, num_val=4 * global_batch,
                                feature_dim=feature_dim(cfg.model), variant=variant)
    if name == "finetune":
        return build_train_step(finetune_config(variant, platform), mesh, global_batch, "finetune", pretrain=False)
    return build_train_step(pretrain_config(name, variant, platform), mesh, global_batch)
