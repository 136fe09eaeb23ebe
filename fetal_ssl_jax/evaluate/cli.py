"""`launch.py probe|finetune|knn --config configs/<protocol>.py[:tiny] --workdir DIR [--config.k=v ...]`.

Common overrides: ``--config.init=random|<SSL workdir or encoder dir>|imagenet:<state dict>``,
``--config.fraction=1|10|100``, ``--config.seed=S``, ``--config.data.store=<labelled store>``.
A workdir that holds metrics.json is finished and is not rerun; an unfinished fine-tune resumes.
"""
from __future__ import annotations

import argparse
import os
import sys

from fetal_ssl_jax import cli_errors, configuration, errors


def add_arguments(p: argparse.ArgumentParser, name: str = "finetune") -> None:
    p.add_argument("--config", default=f"configs/{name}.py", help=f"configs/{name}.py[:variant] (default %(default)s)")
    p.add_argument("--workdir", required=True, help="run directory; a finished one (metrics.json) is not rerun")
    if name == "finetune":
        p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)


def _summary(m: dict) -> str:
    v, t = m["val"], m["test"]
    return (f"{m['protocol']} init={m['init_method']} fraction={m['fraction']:g}% seed={m['seed']}: "
            f"test macro-F1 {t['macro_f1']:.4f} acc {t['accuracy']:.4f} bal-acc {t['balanced_accuracy']:.4f} "
            f"(val macro-F1 {v['macro_f1']:.4f})")


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    name = getattr(args, "command", None) or "finetune"
    from fetal_ssl_jax.evaluate.defaults import validate

    def check(cfg) -> None:
        if cfg.get("protocol") != name:
            raise ValueError(f"{args.config} is a {cfg.get('protocol')!r} config; use configs/{name}.py")
        validate(cfg)

    cfg = cli_errors.load_config(name, args.config, overrides, check)
    if cfg is None:
        return errors.USAGE
    if os.path.exists(args.workdir) and not os.path.isdir(args.workdir):
        print(f"launch.py {name}: --workdir {args.workdir} is a file, not a directory", file=sys.stderr)
        return errors.USAGE
    from fetal_ssl_jax.object_storage import require_file_path
    try:
        require_file_path(args.workdir, "--workdir")
    except FileNotFoundError as e:
        print(f"launch.py {name}: {e}", file=sys.stderr)
        return errors.USAGE
    from fetal_ssl_jax.evaluate import results
    if results.is_finished(args.workdir):
        done = results.read(args.workdir)
        if done.get("config_hash") != configuration.config_hash(cfg):
            print(f"launch.py {name}: {args.workdir} holds a finished run of another config "
                  f"({done.get('config_hash')} != {configuration.config_hash(cfg)}); use a new --workdir",
                  file=sys.stderr)
            return errors.USAGE
        print(f"already finished: {_summary(done)}")
        return 0
    def body():
        if name == "probe":
            from fetal_ssl_jax.evaluate.linear_probe import probe
            return probe(cfg, args.workdir)
        if name == "knn":
            from fetal_ssl_jax.evaluate.knn import knn
            return knn(cfg, args.workdir)
        from fetal_ssl_jax.evaluate.finetune import finetune
        return finetune(cfg, args.workdir, stop_after=getattr(args, "stop_after", None))

    code, m = cli_errors.run_guarded(name, body)
    if code is not None:
        return code
    if m is None:
        print(f"{name}: stopped early; rerun the same command to resume")
        return 0
    print(_summary(m))
    return 0
