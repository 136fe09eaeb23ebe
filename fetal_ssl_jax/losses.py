"""Pure SSL losses on the global batch (float32; 'highest' precision for big matmuls).

Signatures and definitions are fixed by the issues (2 and 3). Every function takes the
embeddings of the *global* batch: under ``jax.jit`` with a batch sharded over 'data',
means, variances and negatives are global without any explicit gather.
The ``*_terms`` helpers return the components for logging; the named losses return
the scalar.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
HIGHEST = lax.Precision.HIGHEST


def upcast(x: Array) -> Array:
    """At least float32 (bf16 activations are upcast; float64 stays for gradient checks)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
    """x / max(||x||, eps), as torch.nn.functional.normalize (finite at x = 0)."""
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    return x * lax.rsqrt(jnp.maximum(sq, eps * eps))


def _off_diagonal_sq_sum(c: Array) -> Array:
    return jnp.sum(c * c) - jnp.sum(jnp.diagonal(c) ** 2)


def barlow_twins_terms(z1: Array, z2: Array, lambd: float = 0.0051) -> dict[str, Array]:
    """On-diagonal ``sum (1-c_ii)^2`` and weighted off-diagonal ``lambd * sum c_ij^2``."""
    z1, z2 = upcast(z1), upcast(z2)
    b = z1.shape[0]

    def standardise(z: Array) -> Array:
        mean = jnp.mean(z, axis=0)
        var = jnp.mean(jnp.square(z - mean), axis=0)  # biased, as BatchNorm1d(affine=False)
        return (z - mean) / jnp.sqrt(var + 1e-5)

    c = jnp.matmul(standardise(z1).T, standardise(z2), precision=HIGHEST) / b
    on_diag = jnp.sum(jnp.square(1.0 - jnp.diagonal(c)))
    off_diag = lambd * _off_diagonal_sq_sum(c)
    return {"on_diag": on_diag, "off_diag": off_diag}


def barlow_twins_loss(z1: Array, z2: Array, lambd: float = 0.0051) -> Array:
    t = barlow_twins_terms(z1, z2, lambd)
    return t["on_diag"] + t["off_diag"]


def vicreg_terms(z1: Array, z2: Array, eps: float = 1e-4) -> dict[str, Array]:
    """Unweighted invariance, variance and covariance terms of VICReg."""
    z1, z2 = upcast(z1), upcast(z2)
    b, d = z1.shape
    inv = jnp.mean(jnp.square(z1 - z2))

    def var_cov(z: Array) -> tuple[Array, Array]:
        zc = z - jnp.mean(z, axis=0)
        std = jnp.sqrt(jnp.sum(zc * zc, axis=0) / (b - 1) + eps)
        cov = jnp.matmul(zc.T, zc, precision=HIGHEST) / (b - 1)
        return jnp.mean(jax.nn.relu(1.0 - std)), _off_diagonal_sq_sum(cov) / d

    v1, c1 = var_cov(z1)
    v2, c2 = var_cov(z2)
    return {"inv": inv, "var": v1 / 2 + v2 / 2, "cov": c1 + c2}


def vicreg_loss(z1: Array, z2: Array, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, eps: float = 1e-4) -> Array:
    t = vicreg_terms(z1, z2, eps)
    return sim_coeff * t["inv"] + std_coeff * t["var"] + cov_coeff * t["cov"]


def nt_xent_loss(z1: Array, z2: Array, temperature: float = 0.1) -> Array:
    """SimCLR NT-Xent over the 2B views; each anchor's positive is its other view."""
    z = l2_normalize(jnp.concatenate([upcast(z1), upcast(z2)], axis=0))
    n = z.shape[0]
    b = n // 2
    logits = jnp.matmul(z, z.T, precision=HIGHEST) / temperature
    logits = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, logits)
    pos_idx = (jnp.arange(n) + b) % n
    pos = jnp.take_along_axis(logits, pos_idx[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - pos)


def byol_loss(p: Array, z: Array) -> Array:
    """Mean over the batch of 2 - 2 cos(p, z); the target z is under stop-gradient."""
    p = l2_normalize(upcast(p))
    z = l2_normalize(lax.stop_gradient(upcast(z)))
    return jnp.mean(2.0 - 2.0 * jnp.sum(p * z, axis=-1))


def moco_loss(q: Array, k: Array, queue: Array, temperature: float = 0.2) -> Array:
    """InfoNCE with the positive key at index 0 and the queue as negatives."""
    q = l2_normalize(upcast(q))
    k = l2_normalize(lax.stop_gradient(upcast(k)))
    queue = l2_normalize(lax.stop_gradient(upcast(queue)))
    l_pos = jnp.sum(q * k, axis=-1, keepdims=True)
    l_neg = jnp.matmul(q, queue.T, precision=HIGHEST)
    logits = jnp.concatenate([l_pos, l_neg], axis=1) / temperature
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0])


def reconstruction_loss(x: Array, x_hat: Array, mask: Array | None = None) -> Array:
    """MSE over all elements, or over the elements where ``mask`` (broadcastable) is true."""
    sq = jnp.square(upcast(x_hat) - upcast(x))
    if mask is None:
        return jnp.mean(sq)
    m = jnp.broadcast_to(jnp.asarray(mask).astype(sq.dtype), sq.shape)
    return jnp.sum(sq * m) / jnp.maximum(jnp.sum(m), 1.0)
