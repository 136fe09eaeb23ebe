"""`launch.py pretrain --config configs/<method>.py[:variant] --workdir DIR [--config.k=v ...]`."""
from __future__ import annotations

import argparse
import sys

from fetal_ssl_jax import configuration


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="configs/<method>.py[:variant]")
    p.add_argument("--workdir", required=True, help="run directory; an existing one is resumed")
    p.add_argument("--coordinator", default="", help="host:port of process 0 for multi-process runs")
    p.add_argument("--num-processes", type=int, default=0)
    p.add_argument("--process-id", type=int, default=-1)
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    try:
        cfg = configuration.load(args.config, overrides)
    except (FileNotFoundError, KeyError, ValueError, AttributeError, SyntaxError) as e:
        print(f"launch.py pretrain: bad config: {configuration.error_text(e)}", file=sys.stderr)
        return 2
    from fetal_ssl_jax.train.pretrain import validate
    try:
        validate(cfg)
    except ValueError as e:
        print(f"launch.py pretrain: bad config: {e}", file=sys.stderr)
        return 2
    if args.coordinator:
        cfg.dist.update(coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
    from fetal_ssl_jax.train.loop import NonFiniteError, Preempted
    from fetal_ssl_jax.train.pretrain import pretrain
    from fetal_ssl_jax.workdir_lock import WorkdirBusy
    try:
        res = pretrain(cfg, args.workdir, stop_after=args.stop_after)
    except NonFiniteError as e:
        print(f"launch.py pretrain: {e}", file=sys.stderr)
        return 3
    except Preempted as e:
        print(f"launch.py pretrain: {e}", file=sys.stderr)
        return 75
    except WorkdirBusy as e:
        print(f"launch.py pretrain: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, FileExistsError, ValueError, KeyError) as e:
        print(f"launch.py pretrain: {configuration.error_text(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permissions: the message says what was kept
        print(f"launch.py pretrain: {e}", file=sys.stderr)
        return 74
    print(f"pretrain {cfg.method}: {res.step} steps in {res.wall_time:.1f}s; last {res.last_metrics.get('loss')}")
    return 0
