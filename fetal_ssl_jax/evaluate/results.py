"""metrics.json and the confusion-matrix PNG: what one evaluation run leaves behind.

A row carries everything needed to reproduce it: init method and source,
protocol, fraction, seed, config hash, code version, store, subset size.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from fetal_ssl_jax import configuration
from fetal_ssl_jax.evaluate import metrics as metrics_lib
from fetal_ssl_jax.evaluate import plots

METRICS = "metrics.json"


def is_finished(workdir: str) -> bool:
    return os.path.exists(os.path.join(workdir, METRICS))


def read(workdir: str) -> dict[str, Any]:
    with open(os.path.join(workdir, METRICS)) as f:
        return json.load(f)


def identity(cfg: ml_collections.ConfigDict, init, subset, store) -> dict[str, Any]:
    return dict(
        protocol=str(cfg.protocol), init=init.identity(), init_method=init.method, fraction=subset.fraction,
        seed=int(cfg.seed), fraction_seed=subset.seed, num_train=int(len(subset.indices)),
        train_class_counts=np.bincount(subset.labels, minlength=store.num_classes).tolist(),
        classes=list(store.classes), store=os.path.abspath(store.path),
        arch=str(init.model_cfg.arch), width=float(init.model_cfg.get("width", 1.0)), image_size=int(init.image_size),
        config_hash=configuration.config_hash(cfg), code_version=configuration.code_version())


def write(workdir: str, ident: dict[str, Any], y_val: tuple[np.ndarray, np.ndarray],
          y_test: tuple[np.ndarray, np.ndarray], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Writes metrics.json + confusion_matrix.png (process 0) and returns the metrics."""
    classes = ident["classes"]
    out = dict(ident)
    out["val"] = metrics_lib.summarize(*y_val, classes)
    out["test"] = metrics_lib.summarize(*y_test, classes)
    out.update(extra or {})
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        title = (f"{ident['protocol']} | init {ident['init_method']} | {ident['fraction']:g}% | seed {ident['seed']}"
                 f" | test macro-F1 {out['test']['macro_f1']:.3f}")
        plots.confusion_matrix_png(out["test"]["confusion_matrix"], classes,
                                   os.path.join(workdir, "confusion_matrix.png"), title)
        tmp = os.path.join(workdir, METRICS + ".tmp")
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1, default=_json_default)
        os.replace(tmp, os.path.join(workdir, METRICS))  # written last: its presence means "finished"
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
