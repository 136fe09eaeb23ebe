"""`launch.py pretrain --config configs/<method>.py[:variant] --workdir DIR [--config.k=v ...]`."""
from __future__ import annotations

import argparse

from fetal_ssl_jax import cli_errors


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="configs/<method>.py[:variant]")
    p.add_argument("--workdir", required=True, help="run directory; an existing one is resumed")
    p.add_argument("--coordinator", default="", help="host:port of process 0 for multi-process runs")
    p.add_argument("--num-processes", type=int, default=0)
    p.add_argument("--process-id", type=int, default=-1)
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from fetal_ssl_jax.train.pretrain import validate
    cfg = cli_errors.load_config("pretrain", args.config, overrides, validate)
    if cfg is None:
        return cli_errors.USAGE
    if args.coordinator:
        cfg.dist.update(coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
    from fetal_ssl_jax.train.pretrain import pretrain
    code, res = cli_errors.run_guarded("pretrain", lambda: pretrain(cfg, args.workdir, stop_after=args.stop_after))
    if code is not None:
        return code
    print(f"pretrain {cfg.method}: {res.step} steps in {res.wall_time:.1f}s; last {res.last_metrics.get('loss')}")
    return 0
