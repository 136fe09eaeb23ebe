"""FLOPs of one pretraining step per SSL method (XLA's cost analysis of the lowered step), for equal-compute
step budgets: ``steps_m = budget / flops_m``. Machine-independent, unlike step times on a shared CPU.

    python benchmarks/method_flops.py --variant cpu [--budget-steps barlowtwins=800] [--json out.json] \\
        --config.model.width=0.5 --config.train.batch_size=64

The step is lowered with ``model.ops='xla'`` (the same arithmetic as the CPU fast path, whose oneDNN custom
calls the cost analysis cannot see) from an abstract state, so nothing is initialised or run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

METHODS = ("autoencoder", "inpainting", "simclr", "moco", "byol", "vicreg", "barlowtwins")


def step_flops(method_name: str, variant: str, overrides: list[str]) -> float:
    import jax
    import jax.numpy as jnp

    from fetal_ssl_jax import configuration
    from fetal_ssl_jax.methods import registry
    from fetal_ssl_jax.train import mesh as mesh_lib, step as step_lib
    from fetal_ssl_jax.train.optimizers import make_optimizer

    spec = os.path.join(ROOT, "configs", f"{method_name}.py") + (f":{variant}" if variant else "")
    cfg = configuration.load(spec, list(overrides) + ["--config.model.ops=xla"])
    configuration.resolve_model_dtype(cfg)
    batch, size = int(cfg.train.batch_size), int(cfg.data.image_size)
    steps = int(cfg.train.steps) or 1000
    method = registry.get_method(cfg)
    tx, lr_fn = make_optimizer(cfg.optim, batch, steps)
    mesh = mesh_lib.make_mesh()
    state = step_lib.abstract_state(method, tx, (2, size, size, 1), mesh)
    data = mesh_lib.batch_sharding(mesh)
    b = {"view1": jax.ShapeDtypeStruct((batch, size, size), jnp.uint8, sharding=data),
         "view2": jax.ShapeDtypeStruct((batch, size, size), jnp.uint8, sharding=data),
         "sample_id": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data)}
    step = step_lib.jit_step(step_lib.make_step_fn(method, tx, lr_fn, cfg.aug), mesh)
    lowered = step.lower(state, b, jax.random.key(0))
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    if not cost or "flops" not in cost:
        cost = lowered.compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="cpu")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--budget-steps", default="barlowtwins=800",
                   help="METHOD=STEPS: the compute of that many steps of METHOD is every method's budget")
    p.add_argument("--json", default="")
    a, overrides = p.parse_known_args()
    a.overrides = overrides  # --config.k=v for every method
    rows = {}
    for m in a.methods.split(","):
        t0 = time.perf_counter()
        rows[m] = step_flops(m, a.variant, a.overrides)
        print(f"{m:12s} {rows[m] / 1e9:8.2f} GFLOP/step  ({time.perf_counter() - t0:.0f} s to lower)", flush=True)
    ref, ref_steps = a.budget_steps.split("=")
    budget = rows[ref] * int(ref_steps) if ref in rows else None
    print(f"\n| method | GFLOP / step | x {ref} | equal-compute steps |\n|---|---|---|---|")
    out = []
    for m, f in rows.items():
        steps = round(budget / f) if budget else None
        out.append(dict(method=m, gflop_per_step=f / 1e9, relative=f / rows.get(ref, f), steps=steps))
        print(f"| {m} | {f / 1e9:.2f} | {f / rows.get(ref, f):.2f} | {steps} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(variant=a.variant, overrides=a.overrides, budget=a.budget_steps, rows=out), fh, indent=1)


if __name__ == "__main__":
    main()
