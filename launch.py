#!/usr/bin/env python
"""fetal-ssl-jax: one command line for the whole pipeline.

    python launch.py synth     --out DIR [--preset tiny|demo|paper]     simulated hospital export
    python launch.py prepare   frames|images ...                          ArrayRecord stores
    python launch.py inspect   STORE                                      manifest summary + contact sheet
    python launch.py pretrain  --config configs/<method>.py[:tiny] --workdir DIR [--config.k=v ...]
    python launch.py probe|finetune|knn --config configs/<protocol>.py[:tiny] --workdir DIR ...
    python launch.py sweep | report | predict | demo

Each subcommand lives in the module named below; it exposes ``add_arguments(parser)``
and ``run(args, overrides) -> int``. Modules are imported only when their command runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("fetal_ssl_jax.phantom.cli", "generate the synthetic fetal-echo dataset"),
    "prepare": ("data_prep.cli", "convert videos / DICOM / HDF5 / images into ArrayRecord stores"),
    "inspect": ("data_prep.inspect_store", "summarise a store and write a contact sheet"),
    "pretrain": ("fetal_ssl_jax.train.cli", "self-supervised pretraining"),
    "probe": ("fetal_ssl_jax.evaluate.cli", "linear probe on a frozen encoder"),
    "finetune": ("fetal_ssl_jax.evaluate.cli", "full fine-tuning"),
    "knn": ("fetal_ssl_jax.evaluate.cli", "k-nearest-neighbour evaluation"),
    "sweep": ("fetal_ssl_jax.experiments.sweep", "run or emit the paper grid"),
    "report": ("fetal_ssl_jax.report.cli", "tables and plots from finished runs"),
    "predict": ("data_prep.predict", "plane finder over a sweep video"),
    "demo": ("fetal_ssl_jax.experiments.demo", "end-to-end demo on the synthetic dataset"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="launch.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.print_help()
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nlaunch.py: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    from fetal_ssl_jax import gc_tuning
    gc_tuning.tune()  # after the command's imports: faster tracing (fetal_ssl_jax/gc_tuning.py)
    cmd_parser = argparse.ArgumentParser(prog=f"launch.py {name}", description=COMMANDS[name][1])
    module.add_arguments(cmd_parser, name) if _takes_name(module.add_arguments) else module.add_arguments(cmd_parser)
    args, rest = cmd_parser.parse_known_args(argv[1:])
    args.command = name
    bad = [r for r in rest if not r.startswith("--config.")]
    if bad:
        cmd_parser.error(f"unrecognised arguments: {' '.join(bad)}")
    return int(module.run(args, rest) or 0)


def _takes_name(fn) -> bool:
    import inspect
    return len(inspect.signature(fn).parameters) >= 2


if __name__ == "__main__":
    sys.exit(main())
