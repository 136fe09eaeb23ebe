"""Per-view BatchNorm: one interleaved 2B batch == two separate forwards (outputs, stats, grads)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from fetal_ssl_jax.models import initialise, norm, resnet
from fetal_ssl_jax.models.mlp import MLP

from float_reference import assert_as_accurate, to_float64

pytestmark = pytest.mark.conv_paths  # `make test-conv-paths` runs this module under XLA and without the kernel


def _x(shape, seed=0, shift=0.0):
    return jnp.asarray(np.random.default_rng(seed).normal(shift, 1.0 + shift, size=shape).astype(np.float32))


def _close(a, b, tol=1e-5):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol * (float(np.abs(np.asarray(v)).max()) + 1e-6))


@pytest.mark.parametrize("shape", [(6, 5, 5, 3), (8, 4)])
def test_one_view_equals_flax_batchnorm(shape):
    x = _x(shape, shift=0.5)
    ours, ref = norm.BatchNorm(momentum=0.9), nn.BatchNorm(momentum=0.9, epsilon=1e-5)
    v = ref.init(jax.random.key(0), x, use_running_average=False)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x, use_running_average=False)) == \
        jax.tree.map(jnp.shape, v)
    v = jax.tree.map(lambda a: a + 0.3, v)  # non-trivial scale/bias/stats
    for train in (True, False):
        ya, ua = ours.apply(v, x, use_running_average=not train, mutable=["batch_stats"])
        yb, ub = ref.apply(v, x, use_running_average=not train, mutable=["batch_stats"])
        _close(ya, yb, 1e-6)
        _close(ua, ub, 1e-6)


def _coupled_loss(o1, o2):
    return jnp.sum(jnp.tanh(o1 * o2))


def _interleaved(model, x1, x2, v):
    """(per-view outputs, new batch_stats, grads of a loss coupling the views): one 2B forward, one program."""
    def loss(p):
        with norm.per_view_statistics(2):
            o, u = model.apply({"params": p, "batch_stats": v["batch_stats"]}, norm.interleave(x1, x2),
                               train=True, mutable=["batch_stats"])
        o = norm.deinterleave(o, 2)
        return _coupled_loss(*o), (o, u)
    (_, (o, u)), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"])
    return jax.device_get((o, u, g))


def _separate(model, x1, x2, v):
    """The same from two separate forwards (view 2 starts from view 1's running statistics). One per-view
    program serves both views (and jax.vjp's backward of it both backward passes): half the compile of a
    program holding both forwards, which was this test's largest cost."""
    @jax.jit
    def fwd(params, stats, x):
        return model.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
    o1, back1, u1 = jax.vjp(lambda p: fwd(p, v["batch_stats"], x1), v["params"], has_aux=True)
    o2, back2, u2 = jax.vjp(lambda p: fwd(p, u1["batch_stats"], x2), v["params"], has_aux=True)
    ct1, ct2 = jax.jit(jax.grad(_coupled_loss, argnums=(0, 1)))(o1, o2)
    g = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))(back1(ct1)[0], back2(ct2)[0])
    return jax.device_get(((o1, o2), u2, g))


# Interleaving changes only rounding (another reduction order in BatchNorm, a 2B-row convolution
# instead of two B-row ones), and BatchNorm over few values amplifies rounding very unevenly
# (ResNet's last stage at 64 px is 2x2): a fixed tolerance held on one CPU and missed on another
# (AVX2 with XLA's convolutions: 1e-4 relative on 2 of 8 elements). So both float32 paths are
# compared with a float64 evaluation of the separate forwards, and the interleaved one must be about
# as accurate as the separate one (tests/float_reference.py). Mixed-up views would be off by O(1).
@pytest.mark.parametrize("make,shape", [(lambda **k: resnet.ResNet18(width=0.125, **k), (8, 64, 64, 1)),
                                        (lambda **k: MLP(hidden=(16, 16), out=8, use_bn=True, last_bn=True, **k),
                                         (6, 12))])
def test_interleaved_views_equal_separate_forwards(make, shape):
    model = make()
    x1, x2 = _x(shape, 1), _x(shape, 2, shift=1.0)  # views with different statistics
    v = initialise.init_module(model, jax.random.key(0), x1, train=True)  # op by op: ~7x slower
    inter = _interleaved(model, x1, x2, v)
    sep = _separate(model, x1, x2, v)
    with jax.enable_x64(True):
        ref = _separate(make(dtype=jnp.float64), *to_float64((x1, x2, v)))
    assert_as_accurate(inter, sep, ref, "interleaved views")
    assert not np.allclose(np.asarray(inter[0][0]), np.asarray(inter[0][1]))


def test_mixing_views_would_differ():
    """Guard for the test above: statistics over the 2B batch give other outputs."""
    model = norm.BatchNorm(momentum=0.9)
    x1, x2 = _x((5, 3), 1), _x((5, 3), 2, shift=2.0)
    v = model.init(jax.random.key(0), x1, use_running_average=False)
    x = norm.interleave(x1, x2)
    with norm.per_view_statistics(2):
        a, _ = model.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    b, _ = model.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    assert float(jnp.abs(a - b).max()) > 0.1


def test_interleave_layout_and_errors():
    a, b = jnp.arange(3.0), jnp.arange(3.0) + 10
    np.testing.assert_array_equal(norm.interleave(a, b), [0, 10, 1, 11, 2, 12])
    ra, rb = norm.deinterleave(norm.interleave(a, b), 2)
    np.testing.assert_array_equal(ra, a)
    np.testing.assert_array_equal(rb, b)
    model = norm.BatchNorm()
    v = model.init(jax.random.key(0), jnp.ones((4, 2)), use_running_average=False)
    with norm.per_view_statistics(2), pytest.raises(ValueError, match="interleaved views"):
        model.apply(v, jnp.ones((3, 2)), use_running_average=False, mutable=["batch_stats"])
    with pytest.raises(ValueError):
        with norm.per_view_statistics(0):
            pass


def _reference_normalize(xg, scale, bias, eps):
    """Straight per-view batch norm (two-pass variance in float64 via NumPy-like jnp ops)."""
    axes = (0,) + tuple(range(2, xg.ndim - 1))
    mu = xg.mean(axes)
    var = jnp.square(xg - norm._bcast(mu, xg.ndim)).mean(axes)
    y = (xg - norm._bcast(mu, xg.ndim)) * norm._bcast(jax.lax.rsqrt(var + eps) * scale, xg.ndim) + bias
    return y, mu, var


@jax.jit
def _both_ways(x, scale, bias, cts):
    """(ours, reference, the cotangents ``cts`` pulled back through each): one program per shape, not ~60
    op-by-op compiles."""
    ours, vjp = jax.vjp(lambda *a: norm._normalize(*a, 1e-5), x, scale, bias)
    ref, vjp_ref = jax.vjp(lambda *a: _reference_normalize(*a, 1e-5), x, scale, bias)
    return ours, ref, vjp(cts), vjp_ref(cts)


@pytest.mark.parametrize("shape", [(6, 2, 5, 4, 3), (8, 1, 7), (4, 3, 2, 2, 5)])
def test_closed_form_vjp_matches_autodiff(shape):
    """The hand-written backward (all three outputs' cotangents) equals autodiff of a plain reference."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(loc=0.7, scale=1.5, size=shape).astype(np.float32))
    scale = jnp.asarray(rng.normal(size=shape[-1:]).astype(np.float32))
    bias = jnp.asarray(rng.normal(size=shape[-1:]).astype(np.float32))
    out_shapes = jax.eval_shape(lambda *a: norm._normalize(*a, 1e-5), x, scale, bias)
    cts = tuple(jnp.asarray(rng.normal(size=o.shape).astype(np.float32)) for o in out_shapes)
    ours, ref, back, back_ref = _both_ways(x, scale, bias, cts)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(back, back_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    only_y = (cts[0], jnp.zeros_like(cts[1]), jnp.zeros_like(cts[2]))  # what training uses
    _, _, back, back_ref = _both_ways(x, scale, bias, only_y)
    for a, b in zip(back, back_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
