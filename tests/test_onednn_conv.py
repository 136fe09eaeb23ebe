"""The oneDNN CPU convolution (XLA FFI): same values and gradients as lax, per shard under a mesh."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from fetal_ssl_jax.kernels import onednn
from fetal_ssl_jax.models import ops as ops_lib
from fetal_ssl_jax.models.conv import Conv
from fetal_ssl_jax.train import mesh as mesh_lib

from float_reference import to_float64

pytestmark = pytest.mark.conv_paths  # `make test-conv-paths` runs this module under XLA and without the kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPPORTED = sys.platform.startswith("linux") and platform.machine() == "x86_64"


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if not SUPPORTED:
        pytest.skip("the oneDNN wheel is pinned for Linux x86_64 only")
    mode = os.environ.get(onednn.ENV, "auto").lower()
    if mode == "xla":
        pytest.skip(f"{onednn.ENV}=xla turns the oneDNN kernel off for this run")
    if not onednn.available():
        why = onednn.unavailable_reason()
        if mode == "auto" and "compiler" in why:  # the documented fallback: no C++ compiler on this machine
            pytest.skip(f"oneDNN kernel not built here: {why}")
        # requirements.txt installs oneDNN and the machine has a compiler: anything else is a real defect.
        pytest.fail(f"oneDNN kernel unavailable: {why}")


def _lax(x, w, s, p):
    return lax.conv_general_dilated(x, w, s, p, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision="highest")


GEOMETRIES = [  # n, h, w, cin, cout, k, stride, pad
    (2, 9, 9, 3, 5, 3, 1, 1),
    (3, 10, 7, 4, 6, 3, 2, 1),   # non-square, stride 2
    (2, 16, 16, 1, 8, 7, 2, 3),  # the torchvision stem
    (4, 8, 8, 4, 6, 1, 2, 0),    # 1x1 downsample
    (2, 2, 2, 16, 16, 3, 1, 1),  # 2x2 output (XLA's slow case)
    (2, 5, 5, 2, 3, 3, 1, 0),    # no padding
]


def _sum_error_bound(terms: int, abs_sum):
    """Worst-case float32 error of a sum of ``terms`` products in any order (and with FMA):
    gamma_K * sum |a_i b_i|, gamma_K = K u / (1 - K u), u = 2^-24 (Higham, Accuracy and Stability, 3.1)."""
    u = float(np.finfo(np.float32).eps) / 2
    return terms * u / (1 - terms * u) * np.asarray(abs_sum, np.float64)


@pytest.mark.parametrize("n,h,w,cin,cout,k,s,p", GEOMETRIES)
def test_values_and_gradients_equal_lax(n, h, w, cin, cout, k, s, p):
    """Output, dx and dW of oneDNN and of lax within the rounding bound of their sums, against float64.

    Each output element is a sum of k*k*cin products, each dx element of at most k*k*cout, each dW element of
    n*Ho*Wo; the bound holds for any summation order, so it holds for every ISA and kernel choice.
    """
    rng = np.random.default_rng(k * 100 + cin)
    x = rng.normal(size=(n, h, w, cin)).astype(np.float32)
    wt = rng.normal(size=(k, k, cin, cout)).astype(np.float32)
    pad = ((p, p), (p, p))
    ours, ref32 = onednn.conv2d(jnp.asarray(x), jnp.asarray(wt), (s, s), pad), _lax(x, wt, (s, s), pad)
    assert ours.shape == ref32.shape
    g = rng.normal(size=ref32.shape).astype(np.float32)
    with jax.enable_x64(True):
        def exact(x, w, g):  # float64 output, dx, dW of sum(conv(x, w) * g)
            y, vjp = jax.vjp(lambda x, w: _lax(x, w, (s, s), pad), x, w)
            return (y, *vjp(g))
        ref = exact(*to_float64((x, wt, g)))
        mag = exact(*to_float64((np.abs(x), np.abs(wt), np.abs(g))))  # sum |a_i b_i| per element
    ho, wo = ref32.shape[1:3]
    bounds = [_sum_error_bound(t, m) for t, m in zip((k * k * cin, k * k * cout, n * ho * wo), mag)]
    ga = jax.grad(lambda x, w: jnp.sum(onednn.conv2d(x, w, (s, s), pad) * g), (0, 1))(x, wt)
    gb = jax.grad(lambda x, w: jnp.sum(_lax(x, w, (s, s), pad) * g), (0, 1))(x, wt)
    for name, got in (("oneDNN", (ours, *ga)), ("lax", (ref32, *gb))):
        for what, a, r, bound in zip(("output", "dx", "dW"), got, ref, bounds):
            err = np.abs(np.asarray(a, np.float64) - np.asarray(r))
            assert np.all(err <= bound), f"{name} {what}: error {err.max():.3g} above its rounding bound"


def test_jit_vmap_and_repeated_calls_agree():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 2, 8, 8, 4)).astype(np.float32))
    wt = jnp.asarray(rng.normal(size=(3, 3, 4, 5)).astype(np.float32))
    f = jax.jit(jax.vmap(lambda x: onednn.conv2d(x, wt, (1, 1), ((1, 1), (1, 1)))))
    out = f(x)
    ref = jnp.stack([_lax(xi, wt, (1, 1), ((1, 1), (1, 1))) for xi in x])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(f(x), out)  # cached primitive, same bits


def test_rejects_non_float32():
    x = jnp.zeros((1, 4, 4, 1), jnp.bfloat16)
    with pytest.raises(TypeError, match="float32"):
        onednn.conv2d(x, jnp.zeros((3, 3, 1, 1), jnp.bfloat16), (1, 1), ((1, 1), (1, 1)))


def test_four_devices_run_per_shard_and_match_one_device():
    """Under the mesh context the batch stays split (no all-gather) and dW is psum-ed over shards."""
    mesh = mesh_lib.make_mesh(4)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 8, 8, 4)).astype(np.float32)
    wt = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    pad = ((1, 1), (1, 1))

    def loss(x, w):
        return jnp.sum(jnp.tanh(onednn.conv2d(x, w, (1, 1), pad)))

    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    ws = jax.device_put(wt, NamedSharding(mesh, P()))
    f = jax.jit(mesh_lib.under_mesh(jax.value_and_grad(loss, (0, 1)), mesh))
    (l4, (dx4, dw4)) = f(xs, ws)
    hlo = f.lower(xs, ws).compile().as_text()
    assert "all-gather" not in hlo and "all-reduce" in hlo  # per-shard convs, dW summed
    l1, (dx1, dw1) = jax.value_and_grad(lambda x, w: jnp.sum(jnp.tanh(_lax(x, w, (1, 1), pad))), (0, 1))(x, wt)
    np.testing.assert_allclose(float(l4), float(l1), rtol=1e-5)
    np.testing.assert_allclose(dx4, dx1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw4, dw1, rtol=1e-5, atol=1e-4)


# The ResNet-level check (loss and gradients of a tiny ResNet-18 with the kernel, against float64) is
# tests/test_models.py::test_xla_ops_trace_no_custom_call_and_match_cpu_fast: the same three compiled programs
# served two tests.


def test_conv_module_selects_the_kernel():
    fast = ops_lib.resolve("cpu_fast")
    assert fast.onednn and fast.views_as_one_batch  # the kernel is built here (fixture)
    assert Conv(4, 3, ops=fast).use_onednn(jnp.float32)
    assert not Conv(4, 3, ops=fast).use_onednn(jnp.bfloat16)
    assert not Conv(4, 3).use_onednn(jnp.float32)  # a bare module: ops 'xla'
    assert not Conv(4, 3, im2col="always", ops=fast).use_onednn(jnp.float32)
    assert not ops_lib.resolve("xla").onednn and not ops_lib.resolve("auto", backend="gpu").onednn


def test_env_switch_turns_it_off():
    code = ("from fetal_ssl_jax.kernels import onednn; from fetal_ssl_jax.models import ops; "
            "f = ops.resolve('cpu_fast'); print(onednn.available(), f.onednn, f.views_as_one_batch)")
    env = dict(os.environ, FETAL_SSL_JAX_CONV="xla")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
    env["FETAL_SSL_JAX_CONV"] = "bogus"
    bad = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "FETAL_SSL_JAX_CONV must be" in bad.stderr
