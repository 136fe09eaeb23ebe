#!/usr/bin/env python
"""Cost of the pretraining monitors per call; prints JSON.

    python benchmarks/monitor_cost.py --store /tmp/mon_lab                     # 'cpu' variant, BarlowTwins
    python benchmarks/monitor_cost.py --store /tmp/mon_lab --config.model.width=0.5

kNN evaluator (evaluate/monitor.py): setup (loading the fixed subset), the first call (compiles the
forward and the kNN vote) and the median of ``--calls`` later calls (what each periodic evaluation
costs). RankMe over the accumulated set (monitors.RankMeBuffer): the median of a full buffer's
computation at the config's projector and backbone widths.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fetal_ssl_jax import configuration, monitors  # noqa: E402
from fetal_ssl_jax.evaluate import monitor as knn_monitor  # noqa: E402
from fetal_ssl_jax.methods import registry  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "barlowtwins.py:cpu"))
    p.add_argument("--store", required=True, help="labelled store (launch.py prepare images)")
    p.add_argument("--calls", type=int, default=5)
    args, overrides = p.parse_known_args()
    cfg = configuration.load(args.config, overrides + ["--config.monitor.every=1",
                                                      f"--config.monitor.labelled_store={args.store}"])
    method = registry.get_method(cfg)
    size = int(cfg.data.image_size)
    params, batch_stats, _ = jax.jit(lambda k: method.init(k, jnp.zeros((2, size, size, 1))))(jax.random.key(0))
    t = time.perf_counter()
    mon = knn_monitor.KnnMonitor(cfg, method.encoder_variables, 10)
    setup = time.perf_counter() - t
    variables = method.encoder_variables(params, batch_stats)
    t = time.perf_counter()
    first = mon.evaluate(variables)
    first_s = time.perf_counter() - t
    times = []
    for _ in range(args.calls):
        t = time.perf_counter()
        mon.evaluate(variables)
        times.append(time.perf_counter() - t)

    n, batch = int(cfg.train.rankme_samples), int(cfg.train.batch_size)
    rows = monitors.RankMeBuffer.rows_per_step(n, int(cfg.train.rankme_every), batch)
    out = method.model.apply({"params": params, "batch_stats": batch_stats}, jnp.zeros((2, size, size, 1)),
                             train=False)
    d_proj, d_feat = (int(out["z"].shape[-1]), int(out["h"].shape[-1])) if isinstance(out, dict) and "z" in out else (0, 0)
    rank_times = []
    if d_proj:
        buf = monitors.RankMeBuffer(n, rows)
        rng = np.random.default_rng(0)
        while not buf.full:
            buf.add(jnp.asarray(rng.normal(size=(rows, d_proj)), jnp.float32),
                    jnp.asarray(rng.normal(size=(rows, d_feat)), jnp.float32))
        jax.block_until_ready(buf.compute())
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(buf.compute())
            rank_times.append(time.perf_counter() - t)
    print(json.dumps(dict(
        config=args.config, arch=cfg.model.arch, width=float(cfg.model.width), image_size=size,
        devices=jax.device_count(), bank=mon.n_bank, queries=len(mon.images) - mon.n_bank,
        knn_setup_s=round(setup, 3), knn_first_call_s=round(first_s, 3),
        knn_call_s_median=round(float(np.median(times)), 3), knn_val_f1_random_init=round(first["knn_val_f1"], 4),
        rankme_rows=n, rankme_rows_per_step=rows, rankme_dims=[d_proj, d_feat],
        rankme_call_s_median=round(float(np.median(rank_times)), 3) if rank_times else None), indent=1))


if __name__ == "__main__":
    main()
