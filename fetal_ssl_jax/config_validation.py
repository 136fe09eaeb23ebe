"""One validator per config section, shared by every command whose config has that section.

Config values out of range fail here, before any data is built or anything is compiled, with a
message naming the key (``optim.base_lr must be > 0, got -1``). A section validator checks the
keys its section has: pretraining's ``train`` has ``steps`` only, fine-tuning's also ``epochs``
(``steps`` 0 = derived from the epochs), ``eval_every``, ``min_steps`` and ``max_evals``.
Each command's ``validate`` (train/pretrain.py, evaluate/defaults.py) checks its own top-level
keys and calls these for its sections.
"""
from __future__ import annotations

import ml_collections

from fetal_ssl_jax.configuration import MODEL_DTYPES

OPTIMIZERS = ("lars", "adamw", "sgd")
MODEL_OPS = ("auto", "xla", "cpu_fast")  # which kernels run: fetal_ssl_jax/models/ops.py


def check_train(t: ml_collections.ConfigDict) -> None:
    """Loop lengths and intervals; ``steps`` must be > 0 unless the section derives it from ``epochs``."""
    positive = ("batch_size", "log_every", "ckpt_every", "keep_checkpoints")
    if "epochs" not in t:
        positive = ("steps",) + positive
    for key in positive:
        if int(t[key]) <= 0:
            raise ValueError(f"train.{key} must be > 0, got {t[key]}")
    for key in ("steps", "eval_every", "min_steps", "max_evals"):
        if key in t and int(t[key]) < 0:
            raise ValueError(f"train.{key} must be >= 0, got {t[key]}")
    if "epochs" in t and int(t.steps) == 0 and not float(t.epochs) > 0:
        raise ValueError(f"train.steps must be > 0, or 0 with train.epochs > 0 (steps from epochs); got steps=0, "
                         f"epochs={t.epochs}")


def check_optim(o: ml_collections.ConfigDict) -> None:
    """Optimizer name, learning rate and the non-negative knobs of the schedule and update."""
    if not float(o.base_lr) > 0:
        raise ValueError(f"optim.base_lr must be > 0, got {o.base_lr}")
    if o.name not in OPTIMIZERS:
        raise ValueError(f"optim.name must be one of {', '.join(OPTIMIZERS)}; got {o.name!r}")
    for key in ("weight_decay", "warmup_steps", "grad_clip", "lr_batch_scale"):
        if float(o.get(key, 0)) < 0 or (key == "lr_batch_scale" and key in o and float(o[key]) == 0):
            raise ValueError(f"optim.{key} must be {'> 0' if key == 'lr_batch_scale' else '>= 0'}, got {o[key]}")
    if o.get("lr_scaling", "linear") not in ("linear", "sqrt"):
        raise ValueError(f"optim.lr_scaling must be 'linear' or 'sqrt', got {o.lr_scaling!r}")
    if not float(o.get("bias_lr_factor", 1.0)) > 0:
        raise ValueError(f"optim.bias_lr_factor must be > 0, got {o.bias_lr_factor}")
    if float(o.get("warmup_epochs", 0.0)) < 0:
        raise ValueError(f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    if not 0 <= float(o.get("warmup_frac", 0.0)) < 1:
        raise ValueError(f"optim.warmup_frac must be in [0, 1), got {o.warmup_frac}")


def check_data(d: ml_collections.ConfigDict, size_from_encoder: bool = False) -> None:
    """Input size and the host-side options present; ``size_from_encoder``: 0 = the encoder's size (evaluation)."""
    size = int(d.image_size)
    if size_from_encoder and (size < 0 or 0 < size < 16):
        raise ValueError(f"data.image_size must be 0 (the encoder's) or >= 16, got {d.image_size}")
    if not size_from_encoder and size < 16:
        raise ValueError(f"data.image_size must be >= 16, got {d.image_size}")
    if "eval_batch_size" in d and int(d.eval_batch_size) <= 0:
        raise ValueError(f"data.eval_batch_size must be > 0, got {d.eval_batch_size}")
    if not 0 <= float(d.get("rotation", 0.0)) <= 180:
        raise ValueError(f"data.rotation is a maximum angle in degrees in [0, 180], got {d.rotation}")
    if int(d.get("temporal_window", 0)) < 0:
        raise ValueError(f"data.temporal_window must be >= 0, got {d.temporal_window}")


def check_model(m: ml_collections.ConfigDict) -> None:
    if m.get("dtype", "float32") not in MODEL_DTYPES:
        raise ValueError(f"model.dtype must be one of {', '.join(MODEL_DTYPES)}; got {m.dtype!r}")
    if str(m.get("ops", "auto")).lower() not in MODEL_OPS:
        raise ValueError(f"model.ops must be one of {', '.join(MODEL_OPS)}; got {m.ops!r}")


def check_probe(p: ml_collections.ConfigDict) -> None:
    if int(p.epochs) <= 0:
        raise ValueError(f"probe.epochs must be > 0, got {p.epochs}")
    if not float(p.lr) > 0:
        raise ValueError(f"probe.lr must be > 0, got {p.lr}")
    if int(p.batch_size) < 0:
        raise ValueError(f"probe.batch_size must be >= 0 (0 = full batch), got {p.batch_size}")
    if p.optimizer not in ("adamw", "sgd"):
        raise ValueError(f"probe.optimizer must be 'adamw' or 'sgd', got {p.optimizer!r}")


def check_knn(k: ml_collections.ConfigDict) -> None:
    if int(k.k) <= 0:
        raise ValueError(f"knn.k must be > 0, got {k.k}")
    if not float(k.temperature) > 0:
        raise ValueError(f"knn.temperature must be > 0, got {k.temperature}")
