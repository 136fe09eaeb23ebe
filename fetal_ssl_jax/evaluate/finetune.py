"""Full fine-tuning: the whole network trained with class-weighted CE in the shared train loop.

The Supervised method + the labelled grain pipeline go through ``train.loop.train_loop``
(same sharding, checkpoints/resume, progress, non-finite guard as pretraining). A hook
scores validation macro-F1 every ``train.eval_every`` steps and keeps the best variables
(``<workdir>/selected``, so a resumed run keeps its selection); the test split is
evaluated once, with the selected model, after training.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from fetal_ssl_jax.data import labelled_pipeline
from fetal_ssl_jax.evaluate import features, labelled_data, metrics as metrics_lib, results
from fetal_ssl_jax.evaluate import init as init_lib
from fetal_ssl_jax.train import encoder_io

SELECTED = "selected"


def run_config(cfg: ml_collections.ConfigDict, init: init_lib.Init, num_classes: int, weights: np.ndarray,
               steps: int) -> ml_collections.ConfigDict:
    """The config the loop and the method see: the init's architecture and normalisation, the subset's weights."""
    rc = ml_collections.ConfigDict(cfg.to_dict())
    rc.model = ml_collections.ConfigDict(init.model_cfg.to_dict())
    rc.model.ops = str(cfg.model.get("ops", "auto"))  # the kernel choice is this run's, not the encoder's
    rc.aug.update(mean=float(init.mean), std=float(init.std))
    rc.supervised.update(num_classes=int(num_classes), class_weights=tuple(float(w) for w in weights))
    if float(rc.optim.get("warmup_frac", 0.0)) > 0:
        rc.optim.warmup_steps = int(round(float(rc.optim.warmup_frac) * steps))
    rc.train.steps = int(steps)
    rc.data.image_size = int(init.image_size)  # the init's input size (the loop reads it from here)
    return rc


def num_steps(cfg: ml_collections.ConfigDict, num_train: int) -> int:
    """``train.steps`` if set, else ``epochs`` passes over the subset but at least ``train.min_steps``.

    The floor matters at 1% labels: 30 epochs of 13 images at batch 64 are 7 steps, too few for
    the head to leave its initialisation, which would compare initialisations by an untrained head.
    """
    if int(cfg.train.steps) > 0:
        return int(cfg.train.steps)
    by_epochs = math.ceil(float(cfg.train.epochs) * num_train / int(cfg.train.batch_size))
    return max(1, by_epochs, int(cfg.train.get("min_steps", 0)))


def eval_interval(cfg: ml_collections.ConfigDict, num_train: int, steps: int) -> int:
    """Steps between validations: ``train.eval_every``, else once per epoch but at most ``max_evals`` times."""
    if int(cfg.train.eval_every) > 0:
        return int(cfg.train.eval_every)
    per_epoch = math.ceil(num_train / int(cfg.train.batch_size))
    max_evals = int(cfg.train.get("max_evals", 0))
    capped = math.ceil(steps / max_evals) if max_evals > 0 else 1
    return max(1, per_epoch, capped)


class Selection:
    """Best validation macro-F1 so far and its variables, persisted in the workdir for resume."""

    def __init__(self, workdir: str, model_cfg: ml_collections.ConfigDict, meta: dict[str, Any]):
        self.dir = os.path.join(workdir, SELECTED)
        self.model_cfg, self.meta = model_cfg, meta
        self.best_f1, self.best_step, self.history = -1.0, -1, {}
        self.variables = None
        if jax.process_index() == 0:
            encoder_io.recover(self.dir)
        if os.path.exists(os.path.join(self.dir, encoder_io.META)):
            _, self.variables, saved = encoder_io.load_encoder(self.dir)
            self.best_f1, self.best_step = float(saved["val_macro_f1"]), int(saved["selected_step"])
            self.history = {int(k): v for k, v in saved.get("history", {}).items()}

    def update(self, step: int, f1: float, variables: Any) -> bool:
        self.history[int(step)] = float(f1)
        if f1 <= self.best_f1:  # ties keep the earlier model
            self._save_meta_only()
            return False
        self.best_f1, self.best_step = float(f1), int(step)
        self.variables = jax.device_get(variables)
        encoder_io.save_encoder(self.dir, self.variables, self.model_cfg, self._meta())
        return True

    def _meta(self) -> dict[str, Any]:
        return dict(self.meta, selected_step=self.best_step, val_macro_f1=self.best_f1,
                    history={str(k): v for k, v in sorted(self.history.items())})

    def _save_meta_only(self) -> None:
        path = os.path.join(self.dir, encoder_io.META)
        if jax.process_index() == 0 and os.path.exists(path):
            with open(path + ".tmp", "w") as f:  # atomic: a kill mid-write must not leave half a JSON
                json.dump(dict(self._meta(), model=self.model_cfg.to_dict()), f, indent=1, sort_keys=True,
                          default=str)
            os.replace(path + ".tmp", path)


def check_same_run(workdir: str, config_hash: str) -> None:
    """A workdir resumes only the run that created it (else checkpoints of another config would load)."""
    path = os.path.join(workdir, "run_identity.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f).get("config_hash")
        if old != config_hash:
            raise ValueError(f"{workdir} holds an unfinished fine-tune of another config ({old} != {config_hash});"
                             " use a new --workdir, or rerun with the original overrides to resume it")
    elif jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump({"config_hash": config_hash}, f)


def finetune(cfg: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None) -> dict[str, Any] | None:
    """Runs (or resumes) a fine-tune; returns the metrics, or None when stopped early by ``stop_after``."""
    from fetal_ssl_jax.methods.supervised import Supervised
    from fetal_ssl_jax.train.loop import train_loop

    from fetal_ssl_jax.train import mesh as mesh_lib
    mesh_lib.check_batch(int(cfg.train.batch_size))  # before any data is built
    os.makedirs(workdir, exist_ok=True)
    store = labelled_data.open_store(cfg, workdir)
    init = init_lib.resolve(cfg)
    subset = labelled_data.train_subset(store, cfg)
    k = store.num_classes
    weights = metrics_lib.class_weights(subset.labels, k)
    batch = int(cfg.train.batch_size)
    steps = num_steps(cfg, len(subset.indices))
    rc = run_config(cfg, init, k, weights, steps)
    method = Supervised(rc)
    size = int(init.image_size)
    ident = results.identity(cfg, init, subset, store)
    check_same_run(workdir, ident["config_hash"])
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(rc.to_json_best_effort(indent=1, sort_keys=True))

    val_x, val_y = labelled_data.load_eval_split(store, "val", size)
    forward = features.ShardedForward(features.backbone_apply(method.model), init.mean, init.std,
                                      int(cfg.data.eval_batch_size))
    eval_every = eval_interval(cfg, len(subset.indices), steps)
    meta = dict(method="supervised", init=init.identity(), protocol="finetune", classes=list(store.classes),
                num_classes=k, image_size=size, in_channels=1, normalize=dict(mean=init.mean, std=init.std),
                fraction=subset.fraction, seed=int(cfg.seed), config_hash=ident["config_hash"],
                code_version=ident["code_version"])
    selection = Selection(workdir, rc.model, meta)

    def select_hook(step: int, state: Any, _metrics: dict) -> None:
        if step % eval_every and step != steps:
            return
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        pred = np.argmax(forward(variables, val_x), -1)
        selection.update(step, metrics_lib.macro_f1(val_y, pred, k), variables)

    def load_init(state: Any) -> Any:
        if init.variables is None:
            return state
        ref = method.encoder_variables(state.params, state.batch_stats)
        init_lib.check_fits(init.variables, ref)
        put = lambda new, old: jax.device_put(np.asarray(new, old.dtype), old.sharding)  # noqa: E731
        params = dict(state.params)
        for name, sub in init.variables["params"].items():
            params[name] = jax.tree.map(put, sub, state.params[name])
        stats = jax.tree.map(put, init.variables["batch_stats"], state.batch_stats)
        return state.replace(params=params, batch_stats=stats)

    def make_dataset(total: int):
        return labelled_pipeline.make_dataset(store, subset.indices, rc.data, size, batch, total, int(cfg.seed),
                                              jax.process_index(), jax.process_count())

    result = train_loop(rc, workdir, method, make_dataset, hooks=(select_hook,), init_fn=load_init,
                        desc=f"finetune {init.method}", stop_after=stop_after)
    if result.step < steps:
        return None
    if selection.variables is None:  # finished run resumed after its last checkpoint: score it now
        select_hook(steps, result.state, {})
    best = selection.variables
    test_x, test_y = labelled_data.load_eval_split(store, "test", size)
    val_pred = np.argmax(forward(best, val_x), -1)
    test_pred = np.argmax(forward(best, test_x), -1)  # the test split, once, with the selected model
    encoder_io.save_encoder(os.path.join(workdir, "encoder"), best, rc.model, selection._meta())
    extra = dict(selected_step=selection.best_step, steps=steps, class_weights=weights.tolist(),
                 val_history={str(s): f for s, f in sorted(selection.history.items())})
    return results.write(workdir, ident, (val_y, val_pred), (test_y, test_pred), extra)
