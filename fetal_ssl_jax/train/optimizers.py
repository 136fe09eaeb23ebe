"""optax optimizers and the per-step warmup + cosine schedule.

Base LR is scaled by global batch / ``lr_batch_scale`` (256 by convention; ``lr_scaling='linear'``,
Goyal et al.) or by sqrt(global batch) (``'sqrt'``, SimCLR's choice for small batches / long runs).
Weight decay and LARS's trust ratio are masked off for 1-D parameters (biases, BatchNorm), and
``bias_lr_factor`` gives those their own LR (BarlowTwins' reference: 0.0048 vs 0.2 for the weights).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import optax

from fetal_ssl_jax import config_validation


def peak_lr(cfg: ml_collections.ConfigDict, global_batch: int) -> float:
    """base_lr x batch / lr_batch_scale ('linear') or base_lr x sqrt(batch) ('sqrt')."""
    if cfg.get("lr_scaling", "linear") == "sqrt":
        return float(cfg.base_lr) * math.sqrt(global_batch)
    return float(cfg.base_lr) * global_batch / float(cfg.lr_batch_scale)


def schedule(cfg: ml_collections.ConfigDict, global_batch: int, total_steps: int) -> optax.Schedule:
    peak = peak_lr(cfg, global_batch)
    warmup = int(min(cfg.warmup_steps, max(total_steps - 1, 0)))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=peak * float(cfg.end_lr_factor))


def matrix_mask(params: Any) -> Any:
    """True for parameters of rank > 1 (kernels), False for biases and BN scales/offsets."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(cfg: ml_collections.ConfigDict, global_batch: int, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    config_validation.check_optim(cfg)
    lr = schedule(cfg, global_batch, total_steps)
    name = cfg.name
    if name == "lars":
        tx = optax.lars(lr, weight_decay=float(cfg.weight_decay), weight_decay_mask=matrix_mask,
                        trust_coefficient=float(cfg.trust_coefficient), trust_ratio_mask=matrix_mask,
                        momentum=float(cfg.momentum))
    elif name == "adamw":
        tx = optax.adamw(lr, b1=float(cfg.b1), b2=float(cfg.b2), weight_decay=float(cfg.weight_decay),
                         mask=matrix_mask)
    elif name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(float(cfg.weight_decay), mask=matrix_mask),
                         optax.sgd(lr, momentum=float(cfg.momentum) or None))
    else:
        raise ValueError(f"unknown optimizer {name!r} (lars, adamw, sgd)")
    factor = float(cfg.get("bias_lr_factor", 1.0))
    if factor != 1.0:
        # Every optimizer here is linear in its LR (LARS/SGD momentum accumulates lr*g, AdamW's step is
        # lr*(adam + wd*p)), so scaling the 1-D parameters' final update is the same as giving them lr*factor.
        tx = optax.chain(tx, optax.masked(optax.scale(factor), lambda p: jax.tree.map(lambda m: not m,
                                                                                     matrix_mask(p))))
    if float(cfg.get("grad_clip", 0.0)) > 0:
        tx = optax.chain(optax.clip_by_global_norm(float(cfg.grad_clip)), tx)
    return tx, lr
