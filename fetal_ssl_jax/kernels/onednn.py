"""oneDNN convolutions for XLA:CPU, compiled on first use and called through the XLA FFI.

Why: on CPU, XLA's own convolution kernels made our ResNet train step 1.4-1.5x slower than
the same step in PyTorch eager, which calls oneDNN. The pinned ``onednn-cpu-gomp`` wheel
provides oneDNN (CPU, OpenMP); this module compiles ``onednn_conv.cc`` against it and the
FFI headers that ship with jaxlib, registers three FFI targets (forward, backward-data,
backward-weights) and exposes :func:`conv2d`, a differentiable NHWC/HWIO float32
convolution. Everything here is optional: without a C++ compiler, the wheel, or on another
platform, :func:`available` says why (once, as a warning) and callers use ``lax``.

``FETAL_SSL_JAX_CONV=xla`` switches it off (e.g. to compare), ``=onednn`` makes a missing
kernel an error instead of a fallback.

Sharding: inside a jitted function traced under a mesh context (``jax.set_mesh`` /
``use_abstract_mesh``; the train step does this) whose ``data`` axis has more than one
device, the kernels run per shard through ``shard_map`` and the weight gradient is summed
with ``psum``. Without a mesh context XLA replicates the custom call: correct, not fast.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("onednn_conv.cc")
TARGETS = ("FetalOnednnConvFwd", "FetalOnednnConvBwdData", "FetalOnednnConvBwdWeights")
ENV = "FETAL_SSL_JAX_CONV"
THREADS_ENV = "FETAL_SSL_JAX_ONEDNN_THREADS"
DW_ROWS_ENV = "FETAL_SSL_JAX_ONEDNN_DW_ROWS"
BUILD_DIR_ENV = "FETAL_SSL_JAX_KERNEL_DIR"
# Weight gradients are summed over batch chunks of about this many output pixels (pairwise),
# because oneDNN's single long accumulation is ~6x less accurate than XLA's (see the .cc).
DW_CHUNK_ROWS = 2048
DW_MIN_IMAGES = 4
DATA_AXIS = "data"


class Unavailable(RuntimeError):
    """The oneDNN kernel cannot be built or loaded here; the message says why."""


def _prefixes() -> list[Path]:
    out = []
    for p in (sysconfig.get_path("data"), sys.prefix, sys.base_prefix):
        if p and Path(p) not in out:
            out.append(Path(p))
    return out


def find_onednn() -> tuple[Path, Path]:
    """(include dir, lib dir) of the oneDNN installed by the ``onednn(-devel)-cpu-gomp`` wheels."""
    for prefix in _prefixes():
        inc, lib = prefix / "include", prefix / "lib"
        if (inc / "oneapi" / "dnnl" / "dnnl.hpp").is_file() and any(lib.glob("libdnnl.so*")):
            return inc, lib
    raise Unavailable("oneDNN headers/library not found under " + ", ".join(map(str, _prefixes()))
                      + " (pip install onednn-devel-cpu-gomp; see requirements.txt)")


def _build_dir() -> Path:
    if os.environ.get(BUILD_DIR_ENV):  # e.g. an empty folder, to check the no-compiler fallback
        d = Path(os.environ[BUILD_DIR_ENV])
        d.mkdir(parents=True, exist_ok=True)
        return d
    d = Path(__file__).with_name("_build")
    try:
        d.mkdir(exist_ok=True)
        if os.access(d, os.W_OK):
            return d
    except OSError:
        pass
    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fetal_ssl_jax"
    d.mkdir(parents=True, exist_ok=True)
    return d


def library_path() -> Path:
    """Where the compiled kernel for this source, jaxlib and oneDNN lives (built or not)."""
    inc, lib = find_onednn()
    h = hashlib.sha1()
    h.update(SOURCE.read_bytes())
    h.update(jax.__version__.encode())
    h.update(str(lib.resolve()).encode())
    return _build_dir() / f"onednn_conv-{h.hexdigest()[:12]}.so"


def build(verbose: bool = False) -> Path:
    """Compiles the kernel if needed (a few seconds, once per source/jaxlib/oneDNN); returns its path."""
    out = library_path()
    if out.is_file():
        return out
    inc, lib = find_onednn()
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx or not shutil.which(cxx):
        raise Unavailable("no C++ compiler (c++/g++, or $CXX) to build the oneDNN convolution kernel"
                          + (f": $CXX={cxx} not found" if cxx else ""))
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", str(SOURCE), "-o", tmp,
           f"-I{jax.ffi.include_dir()}", f"-I{inc}", f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}"]
    if verbose:
        print(" ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise Unavailable(f"compiling {SOURCE.name} failed:\n{proc.stderr[-2000:]}")
    os.replace(tmp, out)  # atomic: concurrent builders (pytest -n) never load a partial file
    return out


@functools.lru_cache(maxsize=None)
def _load() -> str:
    """Builds, loads and registers the FFI targets; returns '' on success or why not."""
    mode = os.environ.get(ENV, "auto").lower()
    if mode == "xla":
        return f"{ENV}=xla"
    if mode not in ("auto", "onednn"):
        raise ValueError(f"{ENV} must be 'auto', 'onednn' or 'xla', got {mode!r}")
    try:
        if not sys.platform.startswith("linux"):
            raise Unavailable(f"only built on Linux (this is {sys.platform})")
        lib = ctypes.CDLL(str(build()))
        for name in TARGETS:
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
    except (Unavailable, OSError) as e:
        if mode == "onednn":
            raise
        log.warning("oneDNN convolutions unavailable, using XLA's (slower on CPU): %s", e)
        return str(e)
    return ""


def unavailable_reason() -> str:
    """Why the kernel is not registered ('' when it is): the switch, a missing compiler or library."""
    return _load()


def available() -> bool:
    """True when the oneDNN kernel is registered (CPU convolutions should use :func:`conv2d`)."""
    return _load() == ""


def settings_from_env() -> tuple[int, int]:
    """(OpenMP threads per call, weight-gradient chunk rows) from the environment; read once, by
    ``models.ops.resolve``, never while tracing.

    Threads: $FETAL_SSL_JAX_ONEDNN_THREADS, else 0 (OpenMP's default: all cores). XLA may run
    independent branches (an SSL step's two views) on two threads at once, so fewer threads per call
    can avoid oversubscription; measured on 2 cores (ResNet-18, two views of 64 at 64 px,
    forward+backward) one team over all cores is faster: 740 vs 858 ms.
    Rows: $FETAL_SSL_JAX_ONEDNN_DW_ROWS, else DW_CHUNK_ROWS (0: one call, no chunks).
    """
    return (max(0, int(os.environ.get(THREADS_ENV, "0") or 0)),
            int(os.environ.get(DW_ROWS_ENV, DW_CHUNK_ROWS)))


def dw_chunk_images(out_pixels: int, rows: int = DW_CHUNK_ROWS) -> int:
    """Images per weight-gradient chunk (0: one call) for outputs of ``out_pixels`` = Ho*Wo pixels.

    About ``rows`` output pixels, but at least DW_MIN_IMAGES images: oneDNN's weight
    gradient runs far below speed on 1-2 images per call (ResNet-18's 7x7 stem at 64 px:
    14.7 ms in chunks of 2 images, 6.8 ms in chunks of 4, 6.3 ms in one call).
    """
    return max(-(-rows // out_pixels), DW_MIN_IMAGES) if rows > 0 else 0


def _attrs(strides, padding, out_shape, threads: int, dw_rows: int) -> dict:
    (pt, pb), (pl, pr) = padding
    return dict(sh=np.int64(strides[0]), sw=np.int64(strides[1]), pt=np.int64(pt), pb=np.int64(pb),
                pl=np.int64(pl), pr=np.int64(pr), threads=np.int64(threads),
                chunk=np.int64(dw_chunk_images(out_shape[1] * out_shape[2], dw_rows)))


def _call(target: str, shape, *args, strides, padding, out_shape, tuning):
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32), vmap_method="sequential")(
        *args, **_attrs(strides, padding, out_shape, *tuning))


def _data_mesh(batch: int):
    """The context mesh when the batch should be split over its ``data`` axis, else None."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return None
    n = mesh.shape[DATA_AXIS]
    return mesh if n > 1 and batch % n == 0 else None


def _out_shape(x_shape, w_shape, strides, padding):
    (pt, pb), (pl, pr) = padding
    n, h, w, _ = x_shape
    kh, kw, _, co = w_shape
    return (n, (h + pt + pb - kh) // strides[0] + 1, (w + pl + pr - kw) // strides[1] + 1, co)


def _per_shard(f, batch: int, in_specs, out_specs):
    """``f`` as is, or per shard of the context mesh's 'data' axis when the batch is split there."""
    mesh = _data_mesh(batch)
    if mesh is None:
        return f
    return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def _fwd_impl(x, w, strides, padding, tuning):
    def f(x, w):
        y = _out_shape(x.shape, w.shape, strides, padding)
        return _call(TARGETS[0], y, x, w, strides=strides, padding=padding, out_shape=y, tuning=tuning)
    return _per_shard(f, x.shape[0], (P(DATA_AXIS), P()), P(DATA_AXIS))(x, w)


def _bwd_impl(x, w, dy, strides, padding, tuning):
    sharded = _data_mesh(x.shape[0]) is not None

    def f(x, w, dy):
        dx = _call(TARGETS[1], x.shape, dy, w, strides=strides, padding=padding, out_shape=dy.shape, tuning=tuning)
        dw = _call(TARGETS[2], w.shape, x, dy, strides=strides, padding=padding, out_shape=dy.shape, tuning=tuning)
        return dx, (jax.lax.psum(dw, DATA_AXIS) if sharded else dw)
    return _per_shard(f, x.shape[0], (P(DATA_AXIS), P(), P(DATA_AXIS)), (P(DATA_AXIS), P()))(x, w, dy)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, padding, tuning):
    return _fwd_impl(x, w, strides, padding, tuning)


def _conv_fwd(x, w, strides, padding, tuning):
    return _fwd_impl(x, w, strides, padding, tuning), (x, w)


def _conv_bwd(strides, padding, tuning, res, dy):
    x, w = res
    return _bwd_impl(x, w, dy, strides, padding, tuning)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
           padding: tuple[tuple[int, int], tuple[int, int]], threads: int = 0,
           dw_rows: int | None = None) -> jax.Array:
    """Same as ``lax.conv_general_dilated(x, kernel, strides, padding, ('NHWC','HWIO','NHWC'))``
    for float32, computed by oneDNN; raises when the kernel is unavailable (see :func:`available`).
    ``threads``/``dw_rows`` (None: DW_CHUNK_ROWS): see :func:`settings_from_env` (models.ops carries them)."""
    if x.dtype != jnp.float32 or kernel.dtype != jnp.float32:
        raise TypeError(f"oneDNN conv2d is float32 only, got {x.dtype} and {kernel.dtype}")
    if not available():
        raise RuntimeError(f"oneDNN convolution kernel unavailable: {_load()}")
    strides = tuple(int(s) for s in strides)
    padding = tuple((int(a), int(b)) for a, b in padding)
    tuning = (int(threads), DW_CHUNK_ROWS if dw_rows is None else int(dw_rows))
    if kernel.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)) and strides != (1, 1):
        # A strided 1x1 convolution is a 1x1 convolution of the subsampled input. Doing the subsampling
        # here keeps oneDNN off its "reduce to unit stride" path, whose AVX2 weight gradient is wrong
        # for fewer than 8 input and output channels (oneDNN 3.2: 7.1 abs error on 4->6 channels, 8x8
        # input, stride 2; tests/test_onednn_conv.py); autodiff of the slice scatters dx back.
        return _conv(x[:, ::strides[0], ::strides[1], :], kernel, (1, 1), padding, tuning)
    return _conv(x, kernel, strides, padding, tuning)


if __name__ == "__main__":  # `python -m fetal_ssl_jax.kernels.onednn`: build now (make does this)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(f"oneDNN convolution kernel: {build(verbose='-v' in sys.argv)}")
    except Unavailable as e:
        print(f"oneDNN convolution kernel not built ({e}); CPU convolutions will use XLA's")
