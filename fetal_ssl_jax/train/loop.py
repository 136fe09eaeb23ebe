"""The one training loop: resume, step, log, checkpoint, stop on non-finite values.

Used by SSL pretraining and by supervised fine-tuning alike; what differs (method,
dataset, hooks) is passed in.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fetal_ssl_jax import monitors as monitors_lib
from fetal_ssl_jax.errors import NonFiniteError, Preempted
from fetal_ssl_jax.methods.base import Method
from fetal_ssl_jax.train import mesh as mesh_lib
from fetal_ssl_jax.train import step as step_lib
from fetal_ssl_jax.train.checkpointing import Checkpointer
from fetal_ssl_jax.train.logging_utils import RunLogger
from fetal_ssl_jax.train.optimizers import make_optimizer
from fetal_ssl_jax.train.state import TrainState
from fetal_ssl_jax.workdir_lock import WorkdirLock


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop checks after each step (then saves and stops)."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handler)
        return self

    def _handler(self, signum, frame):
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


@dataclasses.dataclass
class LoopResult:
    state: Any
    step: int
    last_metrics: dict[str, float]
    wall_time: float
    resumed_from: int | None


def _describe_nonfinite(metrics: dict[str, Any]) -> str:
    bad = [k for k, v in metrics.items() if k not in ("finite", "rankme", "rankme_feat")
           and not np.isfinite(np.asarray(v)).all()]
    return ", ".join(sorted(bad)) or "unknown"


def should_log(done: int, end: int, log_every: int, rankme_every: int = 0) -> bool:
    """Log every ``log_every`` steps, at the last step, and on each step that computed RankMe."""
    return done % log_every == 0 or done == end or (rankme_every > 0 and done % rankme_every == 0)


def embed_rows(cfg: ml_collections.ConfigDict) -> int:
    """Rows of embeddings each step returns for the accumulated RankMe (``make_step_fn``'s ``embed_rows``);
    0 when ``train.rankme_every`` is off."""
    every, samples = int(cfg.train.get("rankme_every", 0)), int(cfg.train.get("rankme_samples", 2048))
    if every <= 0:
        return 0
    if samples < 1:
        raise ValueError(f"train.rankme_samples must be >= 1, got {samples}")
    return monitors_lib.RankMeBuffer.rows_per_step(samples, every, int(cfg.train.batch_size))


def compute_dtype(cfg: ml_collections.ConfigDict) -> Any:
    """The step's compute dtype from ``model.dtype`` (already resolved from 'auto')."""
    return jnp.bfloat16 if cfg.model.get("dtype", "float32") == "bfloat16" else jnp.float32


def train_loop(cfg: ml_collections.ConfigDict, workdir: str, method: Method, make_dataset: Callable[[int], Any], *,
               hooks: tuple[Callable[[int, Any, dict], None], ...] = (), init_fn: Callable[[Any], Any] | None = None,
               desc: str = "train", stop_after: int | None = None,
               monitors: tuple[Callable[[int, Any], dict[str, Any] | None], ...] = ()) -> LoopResult:
    """Runs (or resumes) training in ``workdir``; ``make_dataset(total_steps)`` gives the grain IterDataset.

    Everything else comes from ``cfg``: ``train.steps``, ``train.batch_size`` (global), ``data.image_size``,
    ``aug``, ``optim``, ``train.{log_every, ckpt_every, keep_checkpoints, progress, rankme_every,
    rankme_samples, async_checkpoint, debug_nan_step}``, ``seed``, ``model.dtype``. Callers pass only what
    differs between pretraining and fine-tuning: ``hooks(step, state, metrics)`` after each step (fine-tuning's
    model selection), ``init_fn(state) -> state`` to load pretrained weights into a fresh state,
    ``stop_after`` to end the run early at that step (tests of resume), and ``monitors``: ``monitor(step,
    state) -> {name: value} | None`` after each step, read-only (pretraining's periodic kNN evaluator); what
    one returns is logged with that step's metrics (the step is logged).

    RankMe (``rankme_every`` > 0) is over the last ``rankme_samples`` embeddings accumulated from the
    steps (``monitors.RankMeBuffer``), logged as ``rankme`` (projector output) and ``rankme_feat``
    (backbone features) on the steps that complete a multiple of ``rankme_every`` once the buffer is full.
    """
    total_steps, global_batch = int(cfg.train.steps), int(cfg.train.batch_size)
    size = int(cfg.data.image_size)
    image_shape = (size, size, 1)
    aug_cfg, optim_cfg, seed = cfg.get("aug"), cfg.optim, int(cfg.seed)
    log_every, ckpt_every = int(cfg.train.log_every), int(cfg.train.ckpt_every)
    keep, progress = int(cfg.train.get("keep_checkpoints", 2)), bool(cfg.train.get("progress", True))
    rankme_every = int(cfg.train.get("rankme_every", 0))
    rankme_samples, rows = int(cfg.train.get("rankme_samples", 2048)), embed_rows(cfg)
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch(global_batch)
    with contextlib.ExitStack() as stack:
        if jax.process_index() == 0:  # one writer per workdir; every process computes
            stack.enter_context(WorkdirLock(workdir, desc))
        sigterm = stack.enter_context(_SigtermFlag())
        tx, lr_fn = make_optimizer(optim_cfg, global_batch, total_steps)
        dtype = compute_dtype(cfg)
        sample_shape = (2,) + tuple(image_shape)
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=keep, async_save=bool(cfg.train.get("async_checkpoint", True)))
        dataset = make_dataset(total_steps)
        data_iter = iter(dataset)

        root = jax.random.key(seed)
        latest = ckpt.latest_step()
        if latest is not None:
            abstract = step_lib.abstract_state(method, tx, sample_shape, mesh)
            state = ckpt.restore(latest, abstract, data_iter)
            start = int(latest)
        else:
            state = step_lib.init_state(method, tx, jax.random.fold_in(root, 0), sample_shape, mesh)
            if init_fn is not None:
                state = init_fn(state)
            start = 0
        cfg_json = json.loads(cfg.to_json_best_effort())

        step_fn = step_lib.jit_step(step_lib.make_step_fn(method, tx, lr_fn, aug_cfg, rows, dtype), mesh)
        nan_step = int(cfg.train.get("debug_nan_step", -1))
        step_rng = jax.random.fold_in(root, 1)
        logger = RunLogger(workdir, total_steps, start, progress=progress, desc=desc)
        t0 = time.time()
        last: dict[str, float] = {}
        end = total_steps if stop_after is None else min(total_steps, stop_after)
        pending = None  # (step, metrics) of the previous step, checked one step late to keep dispatch async
        rank_buffer = monitors_lib.RankMeBuffer(rankme_samples, rows) if rows else None
        try:
            for step in range(start, end):
                batch = mesh_lib.to_global(next(data_iter), mesh)
                if step == nan_step:
                    state = _poison(state)
                state, metrics = step_fn(state, batch, step_rng)
                proj, feat = metrics.pop(step_lib.EMBED_PROJ, None), metrics.pop(step_lib.EMBED_FEAT, None)
                if pending is not None:
                    _check(*pending)
                pending = (step + 1, metrics)
                logger.advance()
                done = step + 1
                if rank_buffer is not None and proj is not None:
                    rank_buffer.add(proj, feat)
                    if done % rankme_every == 0:
                        _check(*pending)  # a non-finite step stops with the guard's message, not in RankMe's SVD
                        pending = None
                        metrics.update(rank_buffer.compute())
                extra = {}
                for monitor in monitors:
                    extra.update(monitor(done, state) or {})
                metrics.update(extra)
                if extra or should_log(done, end, log_every, rankme_every):
                    if pending is not None:
                        _check(*pending)
                        pending = None
                    last = logger.log(done, metrics, global_batch)
                for hook in hooks:
                    hook(done, state, metrics)
                preempt = sigterm.set or (jax.process_count() > 1 and ckpt.manager.reached_preemption(done))
                if done % ckpt_every == 0 or done == total_steps or preempt:
                    if pending is not None:
                        _check(*pending)
                        pending = None
                    ckpt.save(done, state, data_iter, cfg_json)
                if preempt and done < end:
                    ckpt.wait()
                    raise Preempted(f"preempted (SIGTERM) after step {done}/{total_steps}: checkpoint saved; "
                                    "rerun the same command to continue")
            if pending is not None:
                _check(*pending)
        except BaseException:
            # Clean up without letting a second error (e.g. the disk is still full) hide the first one.
            for close in (ckpt.close, logger.close):
                try:
                    close()
                except Exception as e:  # noqa: BLE001
                    print(f"{desc}: while stopping, also: {type(e).__name__}: {str(e)[:500]}", file=sys.stderr)
            raise
        ckpt.close()
        logger.close()
        return LoopResult(state=state, step=end, last_metrics=last, wall_time=time.time() - t0,
                          resumed_from=latest)


def _poison(state: TrainState) -> TrainState:
    """``train.debug_nan_step``: NaN parameters before that step, as in a diverged run, for tests of the
    non-finite guard. Put into the state, not into the step, so that the step is the run's own compiled program
    (a NaN switch inside the step made another program: one more step compile per test run). Every parameter,
    not one: a single NaN weight need not reach the loss (a ReLU or max-pool can drop it)."""
    return state.replace(params=jax.jit(lambda p: jax.tree.map(lambda x: x * jnp.nan, p))(state.params))


def _check(step: int, metrics: dict[str, Any]) -> None:
    if not bool(np.asarray(metrics["finite"])):
        host = jax.device_get(metrics)
        raise NonFiniteError(
            f"non-finite values at step {step}: {_describe_nonfinite(host)}; the update was not applied and the "
            f"last good checkpoint is kept. Rerun with a lower learning rate (--config.optim.base_lr=...) "
            f"to continue from it.")
