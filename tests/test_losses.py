"""Each SSL loss against a plain NumPy reference of the issue's definition, and its
gradient against central finite differences (in float64 via ``jax.enable_x64``)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fetal_ssl_jax import losses, monitors


# ----------------------------------------------------------------- NumPy references
def np_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def np_barlow(z1, z2, lambd=0.0051):
    b, d = z1.shape

    def std(z):
        m = z.mean(0)
        v = ((z - m) ** 2).mean(0)
        return (z - m) / np.sqrt(v + 1e-5)

    a, c2 = std(z1), std(z2)
    total = 0.0
    for i in range(d):
        for j in range(d):
            cij = sum(a[n, i] * c2[n, j] for n in range(b)) / b
            total += (1 - cij) ** 2 if i == j else lambd * cij ** 2
    return total


def np_vicreg(z1, z2, sim=25.0, std=25.0, cov=1.0, eps=1e-4):
    b, d = z1.shape
    inv = np.mean((z1 - z2) ** 2)
    var = 0.0
    cv = 0.0
    for z in (z1, z2):
        s = np.sqrt(np.var(z, axis=0, ddof=1) + eps)
        var += np.mean(np.maximum(0.0, 1 - s)) / 2
        c = np.cov(z, rowvar=False)  # unbiased, centred
        cv += (np.sum(c ** 2) - np.sum(np.diag(c) ** 2)) / d
    return sim * inv + std * var + cov * cv


def np_nt_xent(z1, z2, t=0.1):
    z = np_normalize(np.concatenate([z1, z2]))
    n = len(z)
    b = n // 2
    total = 0.0
    for i in range(n):
        sims = [z[i] @ z[j] / t for j in range(n) if j != i]
        pos = z[i] @ z[(i + b) % n] / t
        total += np.log(np.sum(np.exp(sims))) - pos
    return total / n


def np_byol(p, z):
    return np.mean([2 - 2 * (np_normalize(p[i]) @ np_normalize(z[i])) for i in range(len(p))])


def np_moco(q, k, queue, t=0.2):
    q, k, queue = np_normalize(q), np_normalize(k), np_normalize(queue)
    total = 0.0
    for i in range(len(q)):
        logits = np.array([q[i] @ k[i]] + [q[i] @ queue[j] for j in range(len(queue))]) / t
        total += np.log(np.sum(np.exp(logits))) - logits[0]
    return total / len(q)


def np_recon(x, xh, mask=None):
    sq = (xh - x) ** 2
    if mask is None:
        return sq.mean()
    m = np.broadcast_to(mask, sq.shape)
    return sq[m].mean()


def _data(seed, b=6, d=5):
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=(b, d))
    z2 = 0.5 * z1 + rng.normal(size=(b, d))
    return z1, z2


# ----------------------------------------------------------------- values
@functools.lru_cache(maxsize=None)
def _compiled(loss, *args):
    """``loss`` with the arguments after its arrays fixed, jitted once: one program per loss and
    shape instead of ~100 op-by-op compiles."""
    return jax.jit(lambda *z: loss(*z, *args))


@pytest.mark.parametrize("seed", [0, 1])
def test_values_match_numpy(seed):
    z1, z2 = _data(seed)
    z1_, z2_ = (jnp.asarray(a, jnp.float32) for a in (z1, z2))
    queue = np.random.default_rng(seed + 10).normal(size=(7, z1.shape[1]))
    q_ = jnp.asarray(queue, jnp.float32)
    zs, zq = (z1_, z2_), (z1_, z2_, q_)
    cases = [(losses.barlow_twins_loss, (), zs, np_barlow(z1, z2)),
             (losses.barlow_twins_loss, (0.3,), zs, np_barlow(z1, z2, 0.3)),
             (losses.vicreg_loss, (), zs, np_vicreg(z1, z2)),
             (losses.vicreg_loss, (1.0, 2.0, 3.0), zs, np_vicreg(z1, z2, 1.0, 2.0, 3.0)),
             (losses.nt_xent_loss, (), zs, np_nt_xent(z1, z2)),
             (losses.nt_xent_loss, (0.5,), zs, np_nt_xent(z1, z2, 0.5)),
             (losses.byol_loss, (), zs, np_byol(z1, z2)),
             (losses.moco_loss, (), zq, np_moco(z1, z2, queue)),
             (losses.moco_loss, (0.07,), zq, np_moco(z1, z2, queue, 0.07))]
    for loss, args, inputs, want in cases:
        np.testing.assert_allclose(_compiled(loss, *args)(*inputs), want, rtol=1e-4, atol=1e-6,
                                   err_msg=f"{loss.__name__}{args}")


def test_vicreg_small_variance_activates_hinge():
    # Scaled-down embeddings have std < 1, so the variance hinge is non-zero.
    z1, z2 = _data(3)
    z1, z2 = 0.1 * z1, 0.2 * z2
    np.testing.assert_allclose(losses.vicreg_loss(jnp.float32(z1), jnp.float32(z2)),
                               np_vicreg(z1, z2), rtol=1e-4)
    terms = losses.vicreg_terms(jnp.float32(z1), jnp.float32(z2))
    assert float(terms["var"]) > 0.5


def test_terms_sum_to_loss():
    z1, z2 = map(jnp.float32, _data(4))
    t = losses.barlow_twins_terms(z1, z2)
    np.testing.assert_allclose(t["on_diag"] + t["off_diag"], losses.barlow_twins_loss(z1, z2), rtol=1e-6)
    v = losses.vicreg_terms(z1, z2)
    np.testing.assert_allclose(25 * v["inv"] + 25 * v["var"] + v["cov"], losses.vicreg_loss(z1, z2),
                               rtol=1e-6)


def test_reconstruction_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 3))
    xh = rng.normal(size=(2, 4, 4, 3))
    mask = rng.random((2, 4, 4, 1)) > 0.5
    np.testing.assert_allclose(losses.reconstruction_loss(jnp.float32(x), jnp.float32(xh)),
                               np_recon(x, xh), rtol=1e-5)
    np.testing.assert_allclose(losses.reconstruction_loss(jnp.float32(x), jnp.float32(xh), jnp.asarray(mask)),
                               np_recon(x, xh, mask), rtol=1e-5)
    # empty mask: zero, not NaN
    assert float(losses.reconstruction_loss(x, xh, np.zeros_like(mask))) == 0.0


def test_bf16_inputs_computed_in_float32():
    z1, z2 = _data(5)
    out = losses.barlow_twins_loss(jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16))
    assert out.dtype == jnp.float32


def test_stop_gradients():
    z1, z2 = map(jnp.float32, _data(6))
    queue = jnp.ones((3, z1.shape[1]), jnp.float32)
    g_target = jax.grad(lambda z: losses.byol_loss(z1, z))(z2)
    assert float(jnp.abs(g_target).max()) == 0.0
    gk, gq = jax.grad(lambda k, qu: losses.moco_loss(z1, k, qu), argnums=(0, 1))(z2, queue)
    assert float(jnp.abs(gk).max()) == 0.0 and float(jnp.abs(gq).max()) == 0.0


# ----------------------------------------------------------------- gradients
def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


GRAD_CASES = {
    "barlow": lambda a, b, q: losses.barlow_twins_loss(a, b),
    "vicreg": lambda a, b, q: losses.vicreg_loss(0.3 * a, 0.3 * b),  # hinge active
    "nt_xent": lambda a, b, q: losses.nt_xent_loss(a, b, 0.5),
    "byol": lambda a, b, q: losses.byol_loss(a, b),
    "moco": lambda a, b, q: losses.moco_loss(a, b, q, 0.5),
    "recon": lambda a, b, q: losses.reconstruction_loss(b, a, a > 0),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_grad_matches_finite_differences(name):
    z1, z2 = _data(7, b=4, d=3)
    queue = np.random.default_rng(8).normal(size=(5, 3))
    f = jax.jit(GRAD_CASES[name])
    with jax.enable_x64(True):
        a, b, q = (jnp.asarray(v, jnp.float64) for v in (z1, z2, queue))
        g = np.asarray(jax.grad(f)(a, b, q))
        assert g.dtype == np.float64
        fd = _fd_grad(lambda v: float(f(jnp.asarray(v), b, q)), np.asarray(z1))
        # Also the second argument where gradients flow (not for stop-gradient targets).
        g2 = np.asarray(jax.grad(f, argnums=1)(a, b, q))
        fd2 = _fd_grad(lambda v: float(f(a, jnp.asarray(v), q)), np.asarray(z2))
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)
    if name in ("byol", "moco"):  # the second argument is a stop-gradient target
        assert np.abs(g2).max() == 0
    else:
        np.testing.assert_allclose(g2, fd2, rtol=1e-5, atol=1e-7)
    assert np.abs(g).max() > 0


# ----------------------------------------------------------------- monitors
def test_monitors():
    rng = np.random.default_rng(0)
    d = 64
    z = jnp.float32(rng.normal(size=(512, d)))
    assert abs(float(monitors.embedding_std(z)) - 1 / np.sqrt(d)) < 0.01
    collapsed = jnp.ones((512, d)) + 1e-6 * z
    assert float(monitors.embedding_std(collapsed)) < 1e-3
    assert float(monitors.rankme(z)) > 0.8 * d
    rank2 = z[:, :2] @ jnp.float32(rng.normal(size=(2, d)))
    assert float(monitors.rankme(rank2)) < 2.05
    s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
    p = s / s.sum() + 1e-7
    np.testing.assert_allclose(monitors.rankme(z), np.exp(-(p * np.log(p)).sum()), rtol=1e-4)
