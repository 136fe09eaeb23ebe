"""`launch.py pretrain --config configs/<method>.py[:variant] --workdir DIR [--config.k=v ...]`.

With ``--emit commands|slurm|tpu-vm|k8s|skypilot`` (and ``--num-processes N`` for N hosts) the run is
written for a cluster into DIR/<backend>/ instead of being run here (experiments/backends.py)."""
from __future__ import annotations

import argparse
import sys

from fetal_ssl_jax import cli_errors, errors


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="configs/<method>.py[:variant]")
    p.add_argument("--workdir", required=True, help="run directory; an existing one is resumed")
    p.add_argument("--coordinator", default="", help="host:port of process 0 for multi-process runs")
    p.add_argument("--num-processes", type=int, default=0)
    p.add_argument("--process-id", type=int, default=-1)
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    from fetal_ssl_jax.experiments import backends
    backends.add_arguments(p)  # --emit BACKEND: write this run for a cluster (--num-processes N hosts) instead


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    if args.emit:
        from fetal_ssl_jax.experiments import backends
        return backends.emit_pretrain(args, overrides)
    from fetal_ssl_jax.object_storage import require_file_path
    try:
        require_file_path(args.workdir, "--workdir")
    except FileNotFoundError as e:
        print(f"launch.py pretrain: {e}", file=sys.stderr)
        return errors.USAGE
    from fetal_ssl_jax.train.pretrain import validate
    cfg = cli_errors.load_config("pretrain", args.config, overrides, validate)
    if cfg is None:
        return errors.USAGE
    if args.coordinator:
        cfg.dist.update(coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
    from fetal_ssl_jax.evaluate.monitor import make_monitors
    from fetal_ssl_jax.train.pretrain import pretrain
    code, res = cli_errors.run_guarded("pretrain", lambda: pretrain(cfg, args.workdir, stop_after=args.stop_after,
                                                                    make_monitors=make_monitors))
    if code is not None:
        return code
    print(f"pretrain {cfg.method}: {res.step} steps in {res.wall_time:.1f}s; last {res.last_metrics.get('loss')}")
    return 0
