"""SSL pretraining: config -> frame store -> shared loop -> encoder export."""
from __future__ import annotations

import math
import os
from typing import Any, Callable

import jax
import ml_collections

from fetal_ssl_jax import config_validation, configuration
from fetal_ssl_jax.data import pretrain_pipeline
from fetal_ssl_jax.data.frame_store import FrameStore
from fetal_ssl_jax.data.synthetic_store import ensure_synthetic_store
from fetal_ssl_jax.methods.registry import get_method
from fetal_ssl_jax.train import encoder_io, mesh as mesh_lib
from fetal_ssl_jax.train.loop import LoopResult, train_loop


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Config values out of range fail here, before any data is built or anything is compiled."""
    from fetal_ssl_jax.methods import registry
    if cfg.method not in registry.names() or cfg.method == "supervised":
        raise ValueError(f"unknown method {cfg.method!r}; known: "
                         f"{', '.join(n for n in registry.names() if n != 'supervised')}")
    config_validation.check_train(cfg.train)
    config_validation.check_optim(cfg.optim)
    config_validation.check_data(cfg.data)
    config_validation.check_model(cfg.model)


def open_store(cfg: ml_collections.ConfigDict, workdir: str) -> FrameStore:
    if cfg.data.store:
        return FrameStore.open(cfg.data.store)
    path = os.path.join(workdir, "synthetic_frames")
    make = lambda: ensure_synthetic_store(path, int(cfg.data.synthetic_videos), int(cfg.data.synthetic_frames),
                                          max(int(cfg.data.image_size), 32), seed=int(cfg.seed))
    if jax.process_index() == 0:  # one writer; the others wait for it
        make()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("synthetic frame store")
    return FrameStore.open(path)


def resolve_epochs(cfg: ml_collections.ConfigDict, num_frames: int) -> None:
    """Recipes stated in epochs of the store (as the references state them): ``train.steps = 0`` with
    ``train.epochs`` > 0 becomes ceil(epochs x frames / batch) steps, and ``optim.warmup_epochs`` > 0 sets
    ``optim.warmup_steps``. Resolved once from the store, before the loop; config.json records the result."""
    per_epoch = num_frames / int(cfg.train.batch_size)
    if int(cfg.train.steps) == 0:
        epochs = float(cfg.train.get("epochs", 0.0))
        if not epochs > 0:
            raise ValueError("train.steps is 0: set train.epochs > 0 (or train.steps)")
        cfg.train.steps = max(1, math.ceil(epochs * per_epoch))
    if float(cfg.optim.get("warmup_epochs", 0.0)) > 0:
        cfg.optim.warmup_steps = int(round(float(cfg.optim.warmup_epochs) * per_epoch))


def pretrain(cfg: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None,
             make_monitors: Callable[[ml_collections.ConfigDict, Any], tuple] | None = None) -> LoopResult:
    """``make_monitors(cfg, method)``: the loop's read-only monitors (the CLI passes
    ``evaluate.monitor.make_monitors``, the periodic kNN evaluator of ``cfg.monitor``)."""
    validate(cfg)
    if int(cfg.get("monitor", {}).get("every", 0)) > 0 and make_monitors is None:
        raise ValueError("monitor.every > 0 but no monitors were passed to pretrain() (launch.py pretrain does)")
    mesh_lib.maybe_initialize_distributed(cfg.dist.coordinator, int(cfg.dist.num_processes), int(cfg.dist.process_id))
    configuration.resolve_model_dtype(cfg)  # 'auto': bf16 on GPU/TPU, f32 on CPU (after distributed init)
    mesh_lib.check_batch(int(cfg.train.batch_size))  # before any data is built
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"--workdir {workdir} is a file, not a directory")
    os.makedirs(workdir, exist_ok=True)
    method = get_method(cfg)
    store = open_store(cfg, workdir)
    resolve_epochs(cfg, len(store))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json_best_effort(indent=1, sort_keys=True))
    batch = int(cfg.train.batch_size)

    def make_dataset(steps: int):
        return pretrain_pipeline.make_dataset(store, cfg.data, batch, steps, int(cfg.seed),
                                              jax.process_index(), jax.process_count())

    monitors = tuple(make_monitors(cfg, method)) if make_monitors is not None else ()
    result = train_loop(cfg, workdir, method, make_dataset, desc=f"pretrain {cfg.method}", stop_after=stop_after,
                        monitors=monitors)
    if result.step == int(cfg.train.steps):
        export_encoder(cfg, workdir, method, result.state)
    return result


def export_encoder(cfg: ml_collections.ConfigDict, workdir: str, method, state: Any) -> None:
    variables = method.encoder_variables(state.params, state.batch_stats)
    meta = dict(method=cfg.method, step=int(jax.device_get(state.step)), image_size=int(cfg.data.image_size),
                in_channels=1, normalize=dict(mean=float(cfg.aug.mean), std=float(cfg.aug.std)),
                config_hash=configuration.config_hash(cfg), code_version=configuration.code_version())
    encoder_io.save_encoder(os.path.join(workdir, "encoder"), variables, cfg.model, meta)
