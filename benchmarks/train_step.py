#!/usr/bin/env python
"""Throughput of the shared SSL train step, per method / backbone / image size / batch; prints JSON.

    python benchmarks/train_step.py                                   # BarlowTwins R18, 64+112 px, batch 64
    python benchmarks/train_step.py --methods all --archs resnet18,resnet50 --sizes 64,112,256
    python benchmarks/train_step.py --torch                           # + PyTorch eager reference, side by side
    python benchmarks/train_step.py --torch --rounds 5                # more alternating JAX/PyTorch rounds

Each row: images/s (two views per image count once), step time, compile time, peak memory
(device memory stats on GPU/TPU, max RSS on CPU), the convolution kernel on CPU (oneDNN via
the XLA FFI, or XLA's own with FETAL_SSL_JAX_CONV=xla). The PyTorch reference runs the same
BarlowTwins step (ResNet + 3-layer BN projector, two views, on-the-fly photometric jitter,
blur and noise, loss, backward, SGD-momentum update) in eager mode, only when torch is
installed, in a child process so that neither library's thread pools disturb the other.
For the comparison the JAX rows use the same optimizer (``--optimizer sgd``, the default);
``--optimizer config`` keeps each method's own (LARS for BarlowTwins).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from fetal_ssl_jax import configuration  # noqa: E402
from fetal_ssl_jax.methods import registry  # noqa: E402
from fetal_ssl_jax.train import mesh as mesh_lib, step as step_lib  # noqa: E402
from fetal_ssl_jax.train.optimizers import make_optimizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = ("barlowtwins", "vicreg", "simclr", "byol", "moco", "autoencoder", "inpainting")


def peak_memory_mb() -> float:
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def jax_runner(method_name: str, arch: str, size: int, batch: int, variant: str, dtype: str,
               optimizer: str = "sgd"):
    """Compiles the step; returns (row without timings, run(steps) -> per-step seconds)."""
    cfg = configuration.load(os.path.join(ROOT, "configs", f"{method_name}.py:{variant}"))
    cfg.model.update(arch=arch, small_stem=False, dtype=dtype, width=1.0)
    if optimizer == "sgd":  # what the PyTorch reference runs: SGD, momentum 0.9, weight decay 1e-6
        cfg.optim.update(name="sgd", momentum=0.9, weight_decay=1e-6)
    cfg.data.image_size = size
    cfg.train.update(batch_size=batch, steps=1000)
    method = registry.get_method(cfg)
    tx, lr_fn = make_optimizer(cfg.optim, batch, 1000)
    mesh = mesh_lib.make_mesh()
    box = {"state": step_lib.init_state(method, tx, jax.random.key(0), (2, size, size, 1), mesh)}
    step = step_lib.jit_step(step_lib.make_step_fn(method, tx, lr_fn, cfg.aug), mesh)
    rng = np.random.default_rng(0)
    host = {"view1": rng.integers(0, 256, (batch, size, size), dtype=np.uint8),
            "view2": rng.integers(0, 256, (batch, size, size), dtype=np.uint8),
            "sample_id": np.arange(batch, dtype=np.int32)}
    b = mesh_lib.to_global(host, mesh)
    key = jax.random.key(1)

    def run(steps: int) -> list[float]:
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            box["state"], m = step(box["state"], b, key)
            jax.block_until_ready(m["loss"])
            times.append(time.perf_counter() - t)
        box["loss"] = float(m["loss"])
        return times

    t0 = time.perf_counter()
    run(1)
    compile_s = time.perf_counter() - t0
    ops = method.ops  # the resolved kernel choice (models.ops)
    conv = "onednn" if ops.onednn and dtype == "float32" else "xla"
    row = dict(impl="jax", method=method_name, arch=arch, image_size=size, batch=batch, dtype=dtype,
               optimizer=cfg.optim.name, conv=conv, ops=ops.name, compile_s=compile_s, devices=jax.device_count(),
               backend=jax.default_backend())

    def finish(times: list[float]) -> dict:
        dt = float(np.median(times))
        return dict(row, step_ms=dt * 1e3, images_per_sec=batch / dt, peak_mem_mb=peak_memory_mb(),
                    loss=box["loss"])
    return run, finish


def bench_torch(arch: str, size: int, batch: int, steps: int, proj_dims: tuple[int, ...]) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    from benchmarks.torch_resnet import make_torch_resnet
    nn = torch.nn
    torch.manual_seed(0)
    backbone = make_torch_resnet(arch, num_classes=None, in_channels=1, small_stem=False)
    feat = 512 if arch != "resnet50" else 2048
    layers, d = [], feat
    for h in proj_dims[:-1]:
        layers += [nn.Linear(d, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        d = h
    layers.append(nn.Linear(d, proj_dims[-1]))
    model = nn.Sequential(backbone, nn.Sequential(*layers))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-6)
    g = torch.Generator().manual_seed(0)
    x1 = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=g)
    x2 = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=g)
    blur = torch.tensor([0.06, 0.24, 0.4, 0.24, 0.06])

    def augment(x):
        x = x.float() / 255.0
        b = (torch.rand(batch, 1, 1, 1) - 0.5) * 0.8
        c = 1 + (torch.rand(batch, 1, 1, 1) - 0.5) * 0.8
        x = ((x - x.mean((2, 3), keepdim=True)) * c + x.mean((2, 3), keepdim=True) + b).clamp(0, 1)
        x = torch.nn.functional.conv2d(x, blur.view(1, 1, 5, 1), padding=(2, 0))
        x = torch.nn.functional.conv2d(x, blur.view(1, 1, 1, 5), padding=(0, 2))
        x = (x * (1 + 0.25 * torch.randn_like(x))).clamp(0, 1)
        return (x - 0.5) / 0.25

    def bt_loss(z1, z2, lambd=0.0051):
        n = z1.shape[0]
        z1 = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
        z2 = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
        c = z1.T @ z2 / n
        on = (torch.diagonal(c) - 1).pow(2).sum()
        off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on + lambd * off

    def step():
        opt.zero_grad(set_to_none=True)
        loss = bt_loss(model(augment(x1)), model(augment(x2)))
        loss.backward()
        opt.step()
        return loss

    model.train()
    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    dt = float(np.median(times))
    return dict(impl="torch-eager", method="barlowtwins", arch=arch, image_size=size, batch=batch, dtype="float32",
                optimizer="sgd", step_ms=dt * 1e3, images_per_sec=batch / dt, threads=torch.get_num_threads(),
                torch_version=torch.__version__, loss=float(loss.detach()))


def bench_torch_isolated(arch: str, size: int, batch: int, steps: int, proj_dims: tuple[int, ...]) -> dict | None:
    """``bench_torch`` in a fresh interpreter: torch's OpenMP pool and ours (oneDNN's) never share cores."""
    import subprocess
    args = json.dumps(dict(arch=arch, size=size, batch=batch, steps=steps, proj_dims=list(proj_dims)))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-child", args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"PyTorch reference failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return row or None


def compare_with_torch(run, finish, arch: str, size: int, a: argparse.Namespace) -> list[dict]:
    """Alternates JAX and PyTorch measurements ``a.rounds`` times; rows of both plus the median ratio.

    On a shared machine the speed drifts by several percent between minutes, so each round's
    ratio compares neighbours in time.
    """
    cfg = configuration.load(os.path.join(ROOT, "configs", f"barlowtwins.py:{a.variant}"))
    proj = tuple(cfg.barlowtwins.proj_dims)
    rows, ratios = [], []
    for r in range(a.rounds):
        ours = finish(run(a.steps))
        ref = bench_torch_isolated(arch, size, a.batch, a.steps, proj)
        if ref is None:
            rows.append(ours)
            print(json.dumps(ours), flush=True)
            print(json.dumps({"impl": "torch-eager", "skipped": "torch not installed"}), flush=True)
            return rows
        ratios.append(ours["images_per_sec"] / ref["images_per_sec"])
        for row in (dict(ours, round=r), dict(ref, round=r)):
            rows.append(row)
            print(json.dumps(row), flush=True)
    ratio = dict(comparison="jax/torch images_per_sec", arch=arch, image_size=size,
                 ratio=float(np.median(ratios)), ratios=[round(x, 3) for x in ratios], rounds=len(ratios))
    print(json.dumps(ratio), flush=True)
    return rows + [ratio]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--torch-child":
        a = json.loads(sys.argv[2])
        print(json.dumps(bench_torch(a["arch"], a["size"], a["batch"], a["steps"], tuple(a["proj_dims"]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="barlowtwins", help="comma list or 'all'")
    p.add_argument("--archs", default="resnet18")
    p.add_argument("--sizes", default="64,112")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--variant", default="cpu", help="config variant for head sizes ('' = paper sizes)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "config"),
                   help="sgd: the PyTorch reference's optimizer (fair comparison); config: the method's own")
    p.add_argument("--torch", action="store_true", help="also run the PyTorch eager reference (BarlowTwins)")
    p.add_argument("--rounds", type=int, default=3,
                   help="with --torch: alternate JAX and PyTorch measurements this many times; ratio = median")
    p.add_argument("--out", default="", help="also write the JSON here")
    a = p.parse_args()
    methods = ALL if a.methods == "all" else tuple(a.methods.split(","))
    rows = []
    for arch in a.archs.split(","):
        for size in (int(s) for s in a.sizes.split(",")):
            for m in methods:
                if not os.path.exists(os.path.join(ROOT, "configs", f"{m}.py")):
                    continue
                run, finish = jax_runner(m, arch, size, a.batch, a.variant, a.dtype, a.optimizer)
                if m == "barlowtwins" and a.torch:
                    rows += compare_with_torch(run, finish, arch, size, a)
                else:
                    rows.append(finish(run(a.steps)))
                    print(json.dumps(rows[-1]), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
