"""What initialising a model costs on this machine: op by op (eager), jitted, and jitted as an initialiser
(``fetal_ssl_jax.models.initialise``: XLA:CPU without its backend optimisation passes).

    python benchmarks/init_compile.py                       # tiny ResNet-18 + BarlowTwins/BYOL/SimCLR train states
    python benchmarks/init_compile.py --methods byol --repeat 3

Each measurement runs in its own child process (nothing cached in memory, no persistent compilation cache), so
it is the compile a fresh run pays. Prints one JSON line per row, then a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(kind: str, what: str) -> dict:
    """One measurement (in a fresh process)."""
    sys.path.insert(0, ROOT)
    import jax
    import jax.numpy as jnp
    from fetal_ssl_jax.models import initialise
    t0 = time.perf_counter()
    if what == "resnet18":
        from fetal_ssl_jax.models import resnet
        model = resnet.ResNet18(width=0.125, small_stem=True)
        fn = lambda k: model.init(k, jnp.zeros((8, 32, 32, 1)), train=True)  # noqa: E731
    else:
        from fetal_ssl_jax import configuration
        from fetal_ssl_jax.methods import registry
        from fetal_ssl_jax.train import step as step_lib
        from fetal_ssl_jax.train.optimizers import make_optimizer
        cfg = configuration.load(os.path.join(ROOT, "configs", f"{what}.py:tiny"))
        method = registry.get_method(cfg)
        tx, _ = make_optimizer(cfg.optim, 16, 6)
        sample = jnp.zeros((2, 32, 32, 1), jnp.float32)
        fn = lambda k: step_lib.create_state(method, tx, k, sample)  # noqa: E731
    key = jax.random.key(0)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    if kind == "eager":
        out = fn(key)
    elif kind == "jit":
        out = jax.jit(fn)(key)
    else:
        out = initialise.run_init(fn, key)
    jax.block_until_ready(out)
    return dict(what=what, kind=kind, seconds=round(time.perf_counter() - t0, 2), build_s=round(t_build, 2),
                backend=jax.default_backend())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="barlowtwins,byol,simclr", help="train states (tiny configs) to time")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default="")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "WHAT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(*a.child)))
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.setdefault("JAX_PLATFORMS", "cpu")
    plan = [("eager", "resnet18"), ("jit", "resnet18"), ("initialiser", "resnet18")]
    plan += [(k, m) for m in a.methods.split(",") if m for k in ("jit", "initialiser")]
    rows = []
    for _ in range(a.repeat):
        for kind, what in plan:
            p = subprocess.run([sys.executable, __file__, "--child", kind, what], env=env, capture_output=True,
                               text=True, check=True)
            row = json.loads(p.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    best = {}
    for r in rows:
        k = (r["what"], r["kind"])
        best[k] = min(best.get(k, r["seconds"]), r["seconds"])
    summary = dict(benchmark="benchmarks/init_compile.py", cpus=os.cpu_count(),
                   best_seconds={f"{w}/{k}": s for (w, k), s in best.items()})
    print(json.dumps(summary))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(rows=rows, summary=summary), f, indent=1)


if __name__ == "__main__":
    main()
