#!/usr/bin/env python
"""One-shot accelerator benchmark (issue 15): JAX vs PyTorch on one GPU/TPU, and the host input pipeline.

    python benchmarks/accelerator.py --out accel.json            # on a GPU box: <= 8 min, JSON out
    python benchmarks/accelerator.py --smoke                     # any CPU, seconds (also automatic on CPU)
    python benchmarks/accelerator.py --parts pipeline --pipeline-frames 512   # host pipeline only

Parts, each in its own child process (clean peak-memory counter, no allocator shared between JAX and
PyTorch, an out-of-memory batch size cannot take the others down), with a time limit each:

  jax          BarlowTwins train step of this repository (configs/barlowtwins.py, paper sizes: ResNet-50,
               256 px, projector 8192-8192-8192), bf16 compute, SGD momentum 0.9 (the reference's
               optimizer), batch 64/128/256 per device: views/s (two views per image), step ms, compile s,
               peak device memory (device.memory_stats()), MFU = cost_analysis() flops per step / step time /
               the device's dense bf16 peak (PEAK_FLOPS, keyed by device_kind; --peak-tflops overrides).
  torch-eager  The same work in PyTorch: torchvision ResNet-50 with a 1-channel stem (benchmarks/
  torch-compile torch_resnet.py's copy when torchvision is missing), same projector and loss, on-device
               photometric jitter/blur/noise, channels_last, bf16 autocast, SGD; eager, then torch.compile.
               The JSON gets the ratio JAX / PyTorch in views/s per batch size.
  pipeline     Host input pipeline at 256 px: frame store (ArrayRecord) of frames larger than the crop
               (320 px) -> grain -> rotation, temporal partner, random resized crop, flip -> batch, with
               0/4/8/16 worker processes; views/s and views/s per core (workers=0 with one read thread
               = one core). Needs grain and array_record (benchmarks/README.md says which wheels to
               carry to an offline box); skipped with a message when they are missing.

The step parts need only jax, flax, optax and numpy (+ torch/torchvision for the reference): when
ml_collections is not installed, a minimal stand-in for its ConfigDict is used (``_ensure_ml_collections``).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Dense bf16 peak per device (no sparsity), FLOP/s; matched as substrings of device.device_kind, first hit.
PEAK_FLOPS = (
    ("H200", 989e12), ("H100", 989e12), ("H800", 989e12), ("GH200", 989e12), ("B200", 2250e12),
    ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L4", 121e12),
    ("TPU v6 lite", 918e12), ("TPU v6e", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12), ("TPU v4", 275e12),
)
FULL = dict(batches=(64, 128, 256), size=256, arch="resnet50", proj=(8192, 8192, 8192), steps=10, warmup=2,
            workers=(0, 4, 8, 16), frames=2048, frame_size=320, pipe_batch=128, pipe_batches=16,
            rotation=15.0, temporal_window=4)
SMOKE = dict(batches=(4,), size=32, arch="resnet18", proj=(32, 32, 32), steps=2, warmup=1,
             workers=(0,), frames=16, frame_size=40, pipe_batch=8, pipe_batches=2, rotation=15.0,
             temporal_window=4)


# --------------------------------------------------------------------------- ml_collections stand-in

def _ensure_ml_collections(force_stand_in: bool = False) -> str:
    """Imports ml_collections, or installs a minimal ConfigDict stand-in; returns which one is used."""
    if not force_stand_in and importlib.util.find_spec("ml_collections") is not None:
        return "ml_collections"

    class ConfigDict(dict):
        """The subset of ml_collections.ConfigDict this repository's configs and step use."""

        def __init__(self, initial=None, **kw):
            super().__init__()
            for k, v in dict(initial or {}, **kw).items():
                self[k] = v

        def __setitem__(self, key, value):
            if isinstance(value, dict) and not isinstance(value, ConfigDict):
                value = ConfigDict(value)
            super().__setitem__(key, value)

        def __getattr__(self, key):
            try:
                return self[key]
            except KeyError:
                raise AttributeError(key) from None

        def __setattr__(self, key, value):
            self[key] = value

        def __deepcopy__(self, memo):
            return ConfigDict(copy.deepcopy(dict(self), memo))

        def update(self, *args, **kw):
            for k, v in dict(*args, **kw).items():
                self[k] = v

        def unlocked(self):
            return contextlib.nullcontext()

        def lock(self):
            return self

        def to_dict(self):
            return {k: v.to_dict() if isinstance(v, ConfigDict) else v for k, v in self.items()}

        def to_json_best_effort(self, **kw):
            return json.dumps(self.to_dict(), default=str, **kw)

    mod = types.ModuleType("ml_collections")
    mod.ConfigDict = ConfigDict
    mod.FrozenConfigDict = ConfigDict
    sys.modules["ml_collections"] = mod
    return "stand-in"


# --------------------------------------------------------------------------- JAX step

def peak_flops(device_kind: str, override_tflops: float = 0.0) -> float | None:
    if override_tflops > 0:
        return override_tflops * 1e12
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_kind.lower():
            return flops
    return None


def _cost_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def _host_state(abstract):
    import jax
    import numpy as np
    rng = np.random.default_rng(0)

    def fill(path, s):
        name = getattr(path[-1], "key", getattr(path[-1], "name", str(path[-1])))
        if not np.issubdtype(s.dtype, np.floating) or len(s.shape) < 2 and name not in ("scale", "var"):
            return jax.device_put(np.zeros(s.shape, s.dtype), s.sharding)
        if len(s.shape) < 2:
            return jax.device_put(np.ones(s.shape, s.dtype), s.sharding)
        fan_in = int(np.prod(s.shape[:-1]))
        return jax.device_put(rng.normal(0, (2.0 / fan_in) ** 0.5, s.shape).astype(s.dtype), s.sharding)
    return jax.tree_util.tree_map_with_path(fill, abstract)


def run_jax(batch: int, p: dict, smoke: bool, peak_tflops: float = 0.0, views: str = "one_batch") -> dict:
    """One BarlowTwins step configuration, compiled and timed; the row of the JSON. ``views='separate'``: the
    two views as two forwards instead of one interleaved batch of 2B (``models.ops.Ops.views_as_one_batch``),
    the measurement that decides which is the accelerator default."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fetal_ssl_jax import configuration
    from fetal_ssl_jax.methods import registry
    from fetal_ssl_jax.train import mesh as mesh_lib, step as step_lib
    from fetal_ssl_jax.train.optimizers import make_optimizer

    cfg = configuration.load(os.path.join(ROOT, "configs", "barlowtwins.py"))  # paper sizes
    cfg.model.update(arch=p["arch"], dtype="bfloat16")
    if smoke:
        cfg.model.update(width=0.125, small_stem=True)
    if "ops" in cfg.model:  # the ops switch (issue 16), where it exists: XLA's own kernels on an accelerator
        cfg.model.ops = "xla"
    cfg.barlowtwins.proj_dims = tuple(p["proj"])
    cfg.optim.update(name="sgd", momentum=0.9, weight_decay=1e-6)  # the PyTorch reference's optimizer
    n_dev = jax.device_count()
    global_batch = batch * n_dev
    size = int(p["size"])
    cfg.data.image_size = size
    cfg.train.update(batch_size=global_batch, steps=1000)
    method = registry.get_method(cfg)  # its backbone: fetal_ssl_jax.models.resnet.build_backbone(cfg.model)
    if views == "separate" and hasattr(method, "ops"):  # read by the loss only, so set after construction
        import dataclasses
        method.ops = dataclasses.replace(method.ops, views_as_one_batch=False)
    tx, lr_fn = make_optimizer(cfg.optim, global_batch, 1000)
    mesh = mesh_lib.make_mesh()
    t0 = time.perf_counter()
    if smoke:  # a host-built state (He-normal kernels, unit BN): compiling the initialiser on CPU costs seconds
        state = _host_state(step_lib.abstract_state(method, tx, (2, size, size, 1), mesh))
    else:
        state = step_lib.init_state(method, tx, jax.random.key(0), (2, size, size, 1), mesh)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    host = {"view1": rng.integers(0, 256, (global_batch, size, size), dtype=np.uint8),
            "view2": rng.integers(0, 256, (global_batch, size, size), dtype=np.uint8),
            "sample_id": np.arange(global_batch, dtype=np.int32)}
    b = mesh_lib.to_global(host, mesh)
    key = jax.random.key(1)
    step = step_lib.jit_step(step_lib.make_step_fn(method, tx, lr_fn, cfg.aug, 0, jnp.bfloat16), mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, b, key).compile()
    compile_s = time.perf_counter() - t0
    flops = _cost_flops(compiled)
    for _ in range(p["warmup"]):
        state, m = compiled(state, b, key)
    jax.block_until_ready(m["loss"])
    t0 = time.perf_counter()
    for _ in range(p["steps"]):
        state, m = compiled(state, b, key)
    jax.block_until_ready(m["loss"])
    dt = (time.perf_counter() - t0) / p["steps"]
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    peak_mem = (stats or {}).get("peak_bytes_in_use")
    peak = peak_flops(dev.device_kind, peak_tflops)
    # cost_analysis() describes one device's program (the SPMD partition), so MFU is per device.
    mfu = flops / dt / peak if (flops and peak) else None
    return dict(part="jax", method="barlowtwins", arch=p["arch"], image_size=size, batch_per_device=batch,
                global_batch=global_batch, devices=n_dev, dtype="bfloat16", optimizer="sgd",
                ops=cfg.model.get("ops", "n/a"), views=views, step_ms=dt * 1e3, views_per_s=2 * global_batch / dt,
                images_per_s=global_batch / dt, compile_s=compile_s, init_s=init_s,
                peak_device_mem_gb=peak_mem / 2**30 if peak_mem else None,
                flops_per_step_per_device=flops, peak_flops_per_device=peak, mfu=mfu,
                loss=float(m["loss"]), finite=bool(m["finite"]), backend=jax.default_backend(),
                device_kind=dev.device_kind, jax_version=jax.__version__)


# --------------------------------------------------------------------------- PyTorch reference

def run_torch(batch: int, p: dict, compiled_mode: bool) -> dict:
    import torch
    nn = torch.nn
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    try:
        import torchvision
        backbone = getattr(torchvision.models, p["arch"])(weights=None)
        backbone.conv1 = nn.Conv2d(1, backbone.conv1.out_channels, 7, 2, 3, bias=False)  # 1-channel stem
        feat = backbone.fc.in_features
        backbone.fc = nn.Identity()
        source = f"torchvision {torchvision.__version__}"
    except ImportError:
        from benchmarks.torch_resnet import make_torch_resnet
        backbone = make_torch_resnet(p["arch"], num_classes=None, in_channels=1)
        feat = 2048 if p["arch"] == "resnet50" else 512
        source = "benchmarks/torch_resnet.py"
    layers, d = [], feat
    for h in p["proj"][:-1]:
        layers += [nn.Linear(d, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        d = h
    layers.append(nn.Linear(d, p["proj"][-1]))
    model = nn.Sequential(backbone, nn.Sequential(*layers)).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-6)
    size = int(p["size"])
    g = torch.Generator().manual_seed(0)
    x1 = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=g).to(dev)
    x2 = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=g).to(dev)
    blur = torch.tensor([0.06, 0.24, 0.4, 0.24, 0.06], device=dev)

    def augment(x):  # the photometric work the JAX step does on device (jitter, blur, speckle noise)
        x = x.float() / 255.0
        b = (torch.rand(batch, 1, 1, 1, device=dev) - 0.5) * 0.8
        c = 1 + (torch.rand(batch, 1, 1, 1, device=dev) - 0.5) * 0.8
        mean = x.mean((2, 3), keepdim=True)
        x = ((x - mean) * c + mean + b).clamp(0, 1)
        x = nn.functional.conv2d(x, blur.view(1, 1, 5, 1), padding=(2, 0))
        x = nn.functional.conv2d(x, blur.view(1, 1, 1, 5), padding=(0, 2))
        x = (x * (1 + 0.25 * torch.randn_like(x))).clamp(0, 1)
        return ((x - 0.5) / 0.25).contiguous(memory_format=torch.channels_last)

    def bt_loss(z1, z2, lambd=0.0051):  # float32, as the JAX loss
        z1, z2 = z1.float(), z2.float()
        n = z1.shape[0]
        z1 = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
        z2 = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
        cc = z1.T @ z2 / n
        on = (torch.diagonal(cc) - 1).pow(2).sum()
        return on + lambd * (cc.pow(2).sum() - torch.diagonal(cc).pow(2).sum())

    net = torch.compile(model) if compiled_mode else model
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev, dtype=torch.bfloat16):
            z1, z2 = net(augment(x1)), net(augment(x2))
        loss = bt_loss(z1, z2)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step()
    sync()
    first_s = time.perf_counter() - t0
    for _ in range(max(0, p["warmup"] - 1)):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(p["steps"]):
        loss = step()
    sync()
    dt = (time.perf_counter() - t0) / p["steps"]
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None
    return dict(part="torch-compile" if compiled_mode else "torch-eager", method="barlowtwins", arch=p["arch"],
                image_size=size, batch_per_device=batch, dtype="bf16 autocast", optimizer="sgd",
                channels_last=True, step_ms=dt * 1e3, views_per_s=2 * batch / dt, images_per_s=batch / dt,
                first_step_s=first_s, peak_device_mem_gb=peak, loss=float(loss.detach()), model=source,
                device=torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                torch_version=torch.__version__, cpu_threads=torch.get_num_threads())


# --------------------------------------------------------------------------- host input pipeline

def run_pipeline(p: dict, workers: int, prefetch: int, store_dir: str) -> dict:
    import numpy as np

    from fetal_ssl_jax import configuration
    from fetal_ssl_jax.data import pretrain_pipeline
    from fetal_ssl_jax.data.frame_store import FrameStore

    cfg = configuration.load(os.path.join(ROOT, "configs", "barlowtwins.py"))  # paper data settings, 256 px
    cfg.data.update(image_size=int(p["size"]), workers=workers, prefetch=prefetch, rotation=float(p["rotation"]),
                    temporal_window=int(p["temporal_window"]))
    store = FrameStore.open(store_dir)
    batch, n = int(p["pipe_batch"]), int(p["pipe_batches"])
    it = iter(pretrain_pipeline.make_dataset(store, cfg.data, batch, n + 1, 0))
    t0 = time.perf_counter()
    first = next(it)  # worker start-up and the first batch are not throughput
    start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        b = next(it)
    dt = time.perf_counter() - t0
    assert b["view1"].shape == (batch, int(p["size"]), int(p["size"])) and first["view2"].dtype == np.uint8
    views = 2 * batch * n / dt
    cores = max(1, workers) if workers > 0 else prefetch  # read threads in-process; processes otherwise
    cores = min(cores, os.cpu_count() or 1)
    return dict(part="pipeline", workers=workers, prefetch_threads=prefetch, image_size=int(p["size"]),
                frame_size=int(p["frame_size"]), frames=len(store), batch=batch, batches=n,
                rotation=cfg.data.rotation, temporal_window=cfg.data.temporal_window,
                crop_scale=list(cfg.data.crop_scale), views_per_s=views, cores_busy_at_most=cores,
                views_per_s_per_core=views / cores, first_batch_s=start_s, host_cpus=os.cpu_count())


def make_store(p: dict, path: str) -> str:
    """Frames larger than the crop (e.g. 320 px for 256 px crops) with some texture, several videos."""
    import numpy as np

    from fetal_ssl_jax.data.frame_store import FrameStoreWriter
    rng = np.random.default_rng(0)
    s, n = int(p["frame_size"]), int(p["frames"])
    per_video = 32 if n >= 64 else max(2, n // 4)
    w = FrameStoreWriter(path)
    yy, xx = np.mgrid[0:s, 0:s]
    base = (96 + 64 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.float32)
    k = 0
    while k < n:
        m = min(per_video, n - k)
        frames = [np.clip(base + rng.normal(0, 20, (s, s)), 0, 255).astype(np.uint8) for _ in range(m)]
        w.add_video(f"v{k // per_video}", f"p{k // per_video}", frames)
        k += m
    w.close()
    return path


# --------------------------------------------------------------------------- orchestration

def _child(args: list[str], timeout: float) -> tuple[list[dict], str]:
    """Runs this script as a child for one part; its JSON rows (last stdout line) and an error text."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:.0f}s"
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return [], f"exit {proc.returncode}: " + " | ".join(tail)[-600:]
    return [json.loads(lines[-1])], ""


def child_main(a: argparse.Namespace) -> None:
    p = SMOKE if a.smoke else FULL
    p = dict(p, size=a.size or p["size"], steps=a.steps or p["steps"], frame_size=a.frame_size or p["frame_size"],
             rotation=a.rotation, temporal_window=a.temporal_window)
    if a.part == "jax":
        row = run_jax(a.batch, p, a.smoke, a.peak_tflops, a.views)
    elif a.part in ("torch-eager", "torch-compile"):
        row = run_torch(a.batch, p, a.part == "torch-compile")
    else:
        row = run_pipeline(dict(p, pipe_batch=a.batch), int(a.workers), a.prefetch, a.store)
    row["config_dicts"] = a.config_dicts
    print(json.dumps(row), flush=True)


def _have(*mods: str) -> list[str]:
    return [m for m in mods if importlib.util.find_spec(m) is None]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, seconds (the default on CPU)")
    ap.add_argument("--full", action="store_true", help="paper shapes even on CPU (slow)")
    ap.add_argument("--parts", default="jax,torch-eager,torch-compile,pipeline")
    ap.add_argument("--batches", default="", help="per-device batch sizes (default 64,128,256)")
    ap.add_argument("--size", type=int, default=0, help="image size (default 256)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per configuration (default 10)")
    ap.add_argument("--workers", default="", help="pipeline worker counts (default 0,4,8,16)")
    ap.add_argument("--pipeline-frames", type=int, default=0, help="frames in the benchmark store (default 2048)")
    ap.add_argument("--frame-size", type=int, default=0, help="frame size of the made store (default 320)")
    ap.add_argument("--rotation", type=float, default=15.0, help="pipeline: max rotation in degrees (0 = off)")
    ap.add_argument("--temporal-window", type=int, default=4, help="pipeline: temporal partner window (0 = off)")
    ap.add_argument("--store", default="", help="use this frame store for the pipeline part instead of a made one")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: by device kind)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget; later parts are skipped")
    ap.add_argument("--out", default="", help="write the JSON here too")
    ap.add_argument("--stand-in-config", action="store_true", help="use the ml_collections stand-in (tests)")
    # child-process arguments
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--part", default="", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--prefetch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--config-dicts", default="", help=argparse.SUPPRESS)
    ap.add_argument("--views", default="one_batch", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.config_dicts = _ensure_ml_collections(a.stand_in_config)
    if a.child:
        if a.part == "info":  # the parent never initialises the device itself (a TPU admits one process)
            import jax
            print(json.dumps(dict(backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind,
                                  device_count=jax.device_count(), jax_version=jax.__version__)), flush=True)
            return {}
        child_main(a)
        return {}

    t_start = time.perf_counter()
    deadline = t_start + a.budget_s
    rows, err = _child(["--part", "info"], 120.0)
    if err:
        raise SystemExit(f"benchmarks/accelerator.py: JAX does not start here: {err}")
    info = rows[0]
    backend = info["backend"]
    smoke = a.smoke or (backend == "cpu" and not a.full)
    p = dict(SMOKE if smoke else FULL)
    batches = tuple(int(x) for x in a.batches.split(",")) if a.batches else p["batches"]
    workers = tuple(int(x) for x in a.workers.split(",")) if a.workers else p["workers"]
    if a.pipeline_frames:
        p["frames"] = a.pipeline_frames
    if a.frame_size:
        p["frame_size"] = a.frame_size
    parts = [x for x in a.parts.split(",") if x]
    common = (["--smoke"] if smoke else []) + (["--size", str(a.size)] if a.size else []) + \
             (["--steps", str(a.steps)] if a.steps else []) + (["--stand-in-config"] if a.stand_in_config else []) + \
             ["--frame-size", str(p["frame_size"]), "--rotation", str(a.rotation),
              "--temporal-window", str(a.temporal_window)]
    out = dict(benchmark="benchmarks/accelerator.py", smoke=smoke, **info, host_cpus=os.cpu_count(),
               config_dicts=a.config_dicts, rows=[], skipped=[], ratios=[])

    def left() -> float:
        return deadline - time.perf_counter()

    def add(part: str, args: list[str], what: str, cap: float) -> None:
        if left() < 5:
            out["skipped"].append(dict(part=part, what=what, reason="time budget (--budget-s) spent"))
            return
        rows, err = _child(["--part", part, *args, *common], min(cap, left()))
        if err:
            out["skipped"].append(dict(part=part, what=what, reason=err))
        for r in rows:
            out["rows"].append(r)
            print(json.dumps(r), flush=True)

    jax_cap = 120.0 if not smoke else 90.0
    if "jax" in parts:
        for b in batches:
            add("jax", ["--batch", str(b), "--peak-tflops", str(a.peak_tflops)], f"batch {b}", jax_cap)
        mid = batches[len(batches) // 2]  # the same step with the views as two forwards: which is faster here
        add("jax", ["--batch", str(mid), "--peak-tflops", str(a.peak_tflops), "--views", "separate"],
            f"batch {mid}, views separate", jax_cap)
    torch_missing = _have("torch")
    for mode in ("torch-eager", "torch-compile"):
        if mode not in parts:
            continue
        if torch_missing:
            out["skipped"].append(dict(part=mode, reason="torch is not installed"))
            continue
        if mode == "torch-compile" and "pipeline" in parts:
            continue  # after the pipeline part: the costliest part goes last
        for b in batches:
            add(mode, ["--batch", str(b)], f"batch {b}", 150.0)
    if "pipeline" in parts:
        missing = _have("grain", "array_record")
        if missing:
            out["skipped"].append(dict(part="pipeline", reason=f"not installed: {', '.join(missing)} "
                                                                "(see benchmarks/README.md)"))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                store = a.store
                if not store:
                    t0 = time.perf_counter()
                    _ensure_ml_collections(a.stand_in_config)
                    store = make_store(p, os.path.join(tmp, "frames"))
                    out["pipeline_store_s"] = time.perf_counter() - t0
                pb = str(p["pipe_batch"])
                # One core: in-process, one read thread; then the worker counts asked for.
                add("pipeline", ["--workers", "0", "--prefetch", "1", "--batch", pb, "--store", store],
                    "1 core", 120.0)
                for w in workers:
                    if w == 0:
                        continue
                    if w > (os.cpu_count() or 1):
                        out["skipped"].append(dict(part="pipeline", what=f"{w} workers",
                                                   reason=f"only {os.cpu_count()} CPUs"))
                        continue
                    add("pipeline", ["--workers", str(w), "--prefetch", "1", "--batch", pb, "--store", store],
                        f"{w} workers", 120.0)
        if "torch-compile" in parts and not torch_missing:
            for b in batches:
                add("torch-compile", ["--batch", str(b)], f"batch {b}", 150.0)

    by = {}
    for r in out["rows"]:
        if r["part"] in ("jax", "torch-eager", "torch-compile") and r.get("views", "one_batch") == "one_batch":
            by[(r["part"], r["batch_per_device"])] = r
    for r in out["rows"]:
        one = by.get(("jax", r.get("batch_per_device")))
        if r["part"] == "jax" and r.get("views") == "separate" and one:
            out["ratios"].append(dict(batch_per_device=r["batch_per_device"], versus="views separate",
                                      one_batch_over_separate_views_per_s=one["views_per_s"] / r["views_per_s"]))
    for b in batches:
        j = by.get(("jax", b))
        for mode in ("torch-eager", "torch-compile"):
            t = by.get((mode, b))
            if j and t:
                out["ratios"].append(dict(batch_per_device=b, versus=mode, jax_over_torch_views_per_s=(
                    j["views_per_s"] / (t["views_per_s"] * max(1, j["devices"])))))
    out["wall_s"] = time.perf_counter() - t_start
    text = json.dumps(out, indent=1)
    print(text, flush=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
