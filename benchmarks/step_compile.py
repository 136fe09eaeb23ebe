"""What compiling the tiny train step costs on this machine, and how many kernels XLA:CPU makes of it.

    python benchmarks/step_compile.py                         # BarlowTwins, BYOL, SimCLR; 1 and 4 devices
    python benchmarks/step_compile.py --methods moco --devices 4 --repeat 3

Compilation is most of the test suite's time (README, Tests): every distinct step program a test builds costs
seconds on a 2-core CPU, so this is the figure to watch when a change adds work to the step. Each row runs in a
fresh child process (nothing cached in memory, no persistent compilation cache) with that many fake CPU
devices, and times ``jit_step(make_step_fn(...)).lower(...).compile()`` of the ``tiny`` config (batch 16,
32 px, a host-built state: nothing else is compiled first). ``kernels`` counts the fusions, custom calls,
convolutions and dots of the compiled module (XLA:CPU emits and compiles each on its own); ``compile_cpu_s``
includes XLA's compile threads. Prints one JSON line per row, then a table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL = re.compile(r"=\s.*?\s(fusion|custom-call|convolution|dot)\(")  # per line (. stops at newlines)


def _child(method_name: str, devices: int) -> dict:
    """One measurement (in a fresh process with ``devices`` fake CPU devices)."""
    sys.path.insert(0, ROOT)
    import jax
    import numpy as np
    from fetal_ssl_jax import configuration
    from fetal_ssl_jax.methods import registry
    from fetal_ssl_jax.train import mesh as mesh_lib, step as step_lib
    from fetal_ssl_jax.train.optimizers import make_optimizer
    from benchmarks.accelerator import _host_state  # a host-built state: no initialiser compiled first

    cfg = configuration.load(os.path.join(ROOT, "configs", f"{method_name}.py:tiny"))
    method = registry.get_method(cfg)
    batch, size = int(cfg.train.batch_size), int(cfg.data.image_size)
    tx, lr_fn = make_optimizer(cfg.optim, batch, int(cfg.train.steps))
    mesh = mesh_lib.make_mesh(devices)
    rng = np.random.default_rng(0)
    host = {"view1": rng.integers(0, 256, (batch, size, size), dtype=np.uint8),
            "view2": rng.integers(0, 256, (batch, size, size), dtype=np.uint8),
            "sample_id": np.arange(batch, dtype=np.int32)}
    state = _host_state(step_lib.abstract_state(method, tx, (2, size, size, 1), mesh))
    step = step_lib.jit_step(step_lib.make_step_fn(method, tx, lr_fn, cfg.aug), mesh)
    t0 = time.perf_counter()
    lowered = step.lower(state, mesh_lib.to_global(host, mesh), jax.random.key(1))
    lower_s = time.perf_counter() - t0
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    compiled = lowered.compile()
    r1, compile_s = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    kernels = len(KERNEL.findall(compiled.as_text()))
    return dict(method=method_name, devices=devices, lower_s=round(lower_s, 2), compile_s=round(compile_s, 2),
                compile_cpu_s=round(cpu, 2), kernels=kernels, backend=jax.default_backend(),
                jax_version=jax.__version__)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="barlowtwins,byol,simclr", help="tiny configs to compile")
    ap.add_argument("--devices", default="1,4", help="fake CPU device counts")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(a.child[0], int(a.child[1]))))
        return
    rows = []
    for method_name in a.methods.split(","):
        for devices in (int(d) for d in a.devices.split(",")):
            for _ in range(a.repeat):
                env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_COMPILATION_CACHE="false",
                           XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                                     + os.environ.get("XLA_FLAGS", ""))
                p = subprocess.run([sys.executable, __file__, "--child", method_name, str(devices)], env=env,
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"{method_name} on {devices} devices failed:\n{p.stderr[-3000:]}")
                row = json.loads(p.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"\n{'method':12s} {'devices':>7s} {'kernels':>7s} {'lower s':>8s} {'compile s':>9s} {'compile CPU s':>13s}")
    for r in rows:
        print(f"{r['method']:12s} {r['devices']:7d} {r['kernels']:7d} {r['lower_s']:8.2f} {r['compile_s']:9.2f} "
              f"{r['compile_cpu_s']:13.2f}")


if __name__ == "__main__":
    main()
