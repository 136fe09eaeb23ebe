"""The one train step every method (and supervised fine-tuning) runs.

``step(state, batch, rng) -> (state, metrics)`` is pure and jitted with explicit
shardings (state replicated, batch split over 'data') and the state donated. Losses are
written on the global batch, so BatchNorm statistics and negatives are global without
any collective in method code. A non-finite loss or gradient leaves the state untouched
(so the last good state is what gets checkpointed) and is reported in the metrics.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fetal_ssl_jax.methods.base import Method
from fetal_ssl_jax.models import initialise
from fetal_ssl_jax.train import augment, mesh as mesh_lib
from fetal_ssl_jax.train.state import TrainState

# Metrics keys of the embeddings a step returns for the accumulated RankMe (not logged).
EMBED_PROJ, EMBED_FEAT = "_embed/proj", "_embed/feat"


def prepare_inputs(batch: dict[str, jax.Array], key: jax.Array, aug_cfg: ml_collections.ConfigDict | None,
                   views: tuple[str, ...] = ("view1", "view2")) -> dict[str, jax.Array]:
    """uint8 ``views`` entries -> augmented, normalised float [B, H, W, 1] (view i with augmentation
    setting i, the method's order); other entries pass through."""
    ids = batch.get("sample_id")
    out = {}
    for name, x in batch.items():
        if name in views and x.dtype == jnp.uint8:
            if aug_cfg is None or not aug_cfg.get("enabled", True):
                norm = aug_cfg if aug_cfg is not None else ml_collections.ConfigDict(dict(mean=0.5, std=0.25))
                out[name] = augment.normalize(augment.to_float(x), norm)
            else:
                sid = ids if ids is not None else jnp.arange(x.shape[0], dtype=jnp.int32)
                out[name] = augment.augment_batch(x, key, aug_cfg, views.index(name), sid)
        else:
            out[name] = x
    return out


def _sum_of_squares(tree: Any) -> jax.Array:
    """Sum of squares of every element of ``tree`` in one reduction over its leaves laid end to end.

    ``optax.global_norm`` reduces each leaf on its own: one kernel per parameter array (62 for the tiny
    ResNet-18 with its head, 161 for a ResNet-50), and the step takes three such norms (gradients, their
    groups, parameters). XLA:CPU compiles every kernel separately; here the concatenation fuses into the
    reduction. The tiny BarlowTwins step on 4 CPU devices went from 1,148 to 952 kernels and its compile from
    8.4 to 7.9 CPU-s (``python benchmarks/step_compile.py --methods barlowtwins --devices 4``, four runs of
    each alternated, 2-core AMD EPYC). Only metrics and the finiteness check read these values (the
    optimizers keep their own per-layer norms).
    """
    leaves = [jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    flat = leaves[0] if len(leaves) == 1 else jnp.concatenate(leaves)
    return jnp.sum(flat * flat)


def _grad_norms(grads: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The global gradient norm and, for a dict of parameter groups, each group's norm (``grad_norm/<group>``,
    which names the culprit of a NaN)."""
    if not isinstance(grads, dict) or not grads:
        return jnp.sqrt(_sum_of_squares(grads)), {}
    squares = {k: _sum_of_squares(v) for k, v in grads.items()}
    total = sum(squares.values(), jnp.zeros((), jnp.float32))
    return jnp.sqrt(total), {f"grad_norm/{k}": jnp.sqrt(v) for k, v in squares.items()}


def make_grads_fn(method: Method, aug_cfg: ml_collections.ConfigDict | None, compute_dtype: Any = jnp.float32
                  ) -> Callable:
    """(state, batch, rng) -> ((loss, LossOutput), grads): the step before the update."""

    def grads_fn(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        key = jax.random.fold_in(rng, state.step)
        k_aug, k_loss = jax.random.split(key)
        inputs = prepare_inputs(batch, k_aug, aug_cfg, tuple(method.views))
        if compute_dtype != jnp.float32:
            inputs = {k: v.astype(compute_dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v
                      for k, v in inputs.items()}

        def loss_fn(params):
            out = method.loss(params, state.batch_stats, state.extra, inputs, k_loss, state.step)
            loss = out.loss.astype(jnp.float32)
            return loss, out._replace(loss=loss)

        return jax.value_and_grad(loss_fn, has_aux=True)(state.params)

    return grads_fn


def make_step_fn(method: Method, tx: optax.GradientTransformation, lr_fn: Callable,
                 aug_cfg: ml_collections.ConfigDict | None, embed_rows: int = 0,
                 compute_dtype: Any = jnp.float32) -> Callable:
    """The un-jitted pure step (jit it with ``jit_step``).

    ``embed_rows`` > 0: the metrics also hold the first ``embed_rows`` rows of view 1's projector output
    (``EMBED_PROJ``) and backbone features (``EMBED_FEAT``), float32, for the loop's RankMe over an
    accumulated set (``monitors.RankMeBuffer``); the loop takes them out before logging.
    """
    grads_fn = make_grads_fn(method, aug_cfg, compute_dtype)

    def step_fn(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        (loss, out), grads = grads_fn(state, batch, rng)
        metrics, batch_stats, extra, rank_input = out.metrics, out.batch_stats, out.extra, out.rank_input
        grad_norm, group_norms = _grad_norms(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def apply(state: TrainState) -> TrainState:
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            return TrainState(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                              extra=method.after_update(params, batch_stats, extra, state.step))

        # The update runs only when finite (a cond, not a select of old and new state, which
        # cost an extra pass over parameters and optimizer state: ~1 % of a ResNet-18 CPU step).
        new_state = jax.lax.cond(finite, apply, lambda s: s, state)
        params = new_state.params

        metrics = dict(metrics)
        if rank_input is not None and embed_rows > 0:
            # A few rows per step, not RankMe of this batch: RankMe of B rows can never exceed B.
            metrics[EMBED_PROJ] = rank_input[:embed_rows].astype(jnp.float32)
            feats = out.feature_input if out.feature_input is not None else rank_input
            metrics[EMBED_FEAT] = feats[:embed_rows].astype(jnp.float32)
        metrics.update(group_norms)
        metrics.update(loss=loss, grad_norm=grad_norm, param_norm=jnp.sqrt(_sum_of_squares(params)),
                       lr=lr_fn(state.step), finite=finite)
        return new_state, metrics

    return step_fn


def jit_step(step_fn: Callable, mesh) -> Callable:
    rep = mesh_lib.replicated(mesh)
    return jax.jit(mesh_lib.under_mesh(step_fn, mesh), in_shardings=(rep, mesh_lib.batch_sharding(mesh), rep),
                   out_shardings=(rep, rep), donate_argnums=(0,))


def create_state(method: Method, tx: optax.GradientTransformation, rng: jax.Array, sample: jax.Array
                 ) -> TrainState:
    params, batch_stats, extra = method.init(rng, sample)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), extra=extra)


def init_state(method: Method, tx: optax.GradientTransformation, rng: jax.Array, sample_shape: tuple,
               mesh) -> TrainState:
    """Initialises the state directly into its (replicated) sharding (compiled as an initialiser:
    ``models.initialise``)."""
    sample = jnp.zeros(sample_shape, jnp.float32)
    return initialise.run_init(lambda r: create_state(method, tx, r, sample), rng,
                               out_shardings=mesh_lib.replicated(mesh))


def abstract_state(method: Method, tx: optax.GradientTransformation, sample_shape: tuple, mesh) -> TrainState:
    """Shapes, dtypes and shardings of the state, for restoring a checkpoint without initialising."""
    sample = jax.ShapeDtypeStruct(sample_shape, jnp.float32)
    shapes = jax.eval_shape(lambda r, s: create_state(method, tx, r, s), jax.random.key(0), sample)
    rep = mesh_lib.replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)
