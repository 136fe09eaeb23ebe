#!/usr/bin/env python
"""Per-convolution speed and weight-gradient accuracy: XLA's CPU kernels vs the oneDNN FFI kernel; prints JSON.

    python benchmarks/conv_kernels.py                 # ResNet-18 layer shapes at 64 px, batch 128
    python benchmarks/conv_kernels.py --batch 64 --steps 10

Speed rows: forward and forward+backward ms for 3x3 convolutions of ResNet-18's stages.
Accuracy rows: max |dW - exact| / max |exact| against a float64 reference, for oneDNN with and
without the chunked pairwise weight-gradient sum (FETAL_SSL_JAX_ONEDNN_DW_ROWS=0 is one long sum)
and for XLA.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from fetal_ssl_jax.kernels import onednn  # noqa: E402

PAD = ((1, 1), (1, 1))


def lax_conv(x, w, s, p):
    return lax.conv_general_dilated(x, w, s, p, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def timed(f, *args, steps: int) -> float:
    f = jax.jit(f)
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def speed(batch: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    for h, c, cout, s in [(16, 64, 64, 1), (16, 64, 128, 2), (8, 128, 128, 1), (4, 256, 256, 1), (2, 512, 512, 1)]:
        x = jnp.asarray(rng.normal(size=(batch, h, h, c)).astype(np.float32))
        w = jnp.asarray(rng.normal(size=(3, 3, c, cout)).astype(np.float32))
        row = dict(kind="speed", input=[batch, h, h, c], out_channels=cout, stride=s)
        for name, conv in (("xla", lax_conv), ("onednn", onednn.conv2d)):
            row[f"{name}_fwd_ms"] = timed(lambda x, w: conv(x, w, (s, s), PAD), x, w, steps=steps)
            row[f"{name}_fwd_bwd_ms"] = timed(jax.grad(lambda x, w: jnp.sum(conv(x, w, (s, s), PAD) ** 2), (0, 1)),
                                              x, w, steps=steps)
        print(json.dumps(row), flush=True)


def exact_dw(x: np.ndarray, dy: np.ndarray, k: int) -> np.ndarray:
    h, wd = dy.shape[1:3]
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((k, k, x.shape[3], dy.shape[3]))
    for i in range(k):
        for j in range(k):
            out[i, j] = np.einsum("nhwc,nhwo->co", xp[:, i:i + h, j:j + wd], dy.astype(np.float64))
    return out


def accuracy() -> None:
    rng = np.random.default_rng(0)
    for n, h, c, cout in [(32, 32, 1, 8), (32, 32, 8, 8), (32, 16, 16, 16)]:
        x = rng.normal(size=(n, h, h, c)).astype(np.float32)
        dy = rng.normal(size=(n, h, h, cout)).astype(np.float32)
        w = np.zeros((3, 3, c, cout), np.float32)
        ref = exact_dw(x, dy, 3)
        scale = np.abs(ref).max()
        row = dict(kind="dw_accuracy", input=[n, h, h, c], out_channels=cout)
        variants = (("xla", lax_conv, None), (f"onednn_rows{onednn.DW_CHUNK_ROWS}", onednn.conv2d, onednn.DW_CHUNK_ROWS),
                    ("onednn_one_long_sum", onednn.conv2d, 0))
        for name, conv, rows in variants:
            call = conv if rows is None else functools.partial(conv, threads=0, dw_rows=rows)
            dw = jax.grad(lambda w: jnp.sum(call(jnp.asarray(x), w, (1, 1), PAD) * dy))(jnp.asarray(w))
            row[f"{name}_rel_err"] = float(np.abs(np.asarray(dw) - ref).max() / scale)
        print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    if not onednn.available():
        sys.exit("oneDNN kernel unavailable (see the warning above)")
    speed(a.batch, a.steps)
    accuracy()


if __name__ == "__main__":
    main()
