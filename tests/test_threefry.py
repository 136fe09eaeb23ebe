"""kernels/threefry: with cpu_fast the CPU lowers threefry straight-line (no while loop), and the bits are
threefry2x32's: a NumPy implementation of the hash and Random123's known answer."""
from __future__ import annotations

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np

from fetal_ssl_jax.kernels import threefry
from fetal_ssl_jax.models import ops

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32_numpy(key: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Threefry-2x32, 20 rounds (Salmon et al. 2011), on uint32 arrays: key [2], x [2, N] -> [2, N]."""
    ks = [np.uint32(key[0]), np.uint32(key[1])]
    ks.append(ks[0] ^ ks[1] ^ np.uint32(0x1BD11BDA))
    x0, x1 = x[0] + ks[0], x[1] + ks[1]
    for i in range(5):
        for r in ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return np.stack([x0, x1])


def test_cpu_fast_lowers_threefry_straight_line_with_the_same_bits():
    assert ops.resolve("cpu_fast", backend="cpu").name == "cpu_fast"
    assert threefry.use_unrolled_on_cpu()  # the pinned JAX has the names it replaces (else it would say so)

    fn = jax.jit(jex_random.threefry_2x32)
    kat = fn(jnp.array([0x13198A2E, 0x03707344], jnp.uint32), jnp.array([0x243F6A88, 0x85A308D3], jnp.uint32))
    assert [int(v) for v in kat] == [0xC4923A9C, 0x483DF7A0]  # Random123's known-answer vector

    rng = np.random.default_rng(0)
    with np.errstate(over="ignore"):
        for n in (1, 7, 1000):
            key = rng.integers(0, 2**32, 2, dtype=np.uint32)
            x = rng.integers(0, 2**32, (2, n), dtype=np.uint32)
            got = np.asarray(fn(jnp.asarray(key), jnp.asarray(x).reshape(-1))).reshape(2, n)
            np.testing.assert_array_equal(got, _threefry2x32_numpy(key, x))

    draw = jax.jit(lambda k: jax.random.uniform(k, (16, 5)))
    hlo = draw.lower(jax.random.key(0)).compile().as_text()
    assert " while(" not in hlo, "the CPU threefry lowering still loops"
    # what the augmentation draws: keys folded with sample ids, split, uniform
    u = jax.jit(lambda k: jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(k, i)))(jnp.arange(4)))(
        jax.random.key(3))
    assert u.shape == (4,) and bool(jnp.all((u >= 0) & (u < 1))) and len(set(np.asarray(u).tolist())) == 4
