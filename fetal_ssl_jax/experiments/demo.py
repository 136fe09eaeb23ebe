"""`launch.py demo [--workdir runs/demo]`: the whole pipeline on the simulator, end to end.

Runs the grid of configs/demo.py through the sweep machinery (so an interrupted demo
continues where it stopped), then prints the macro-F1 table and writes report.md + plots.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="runs/demo", help="demo folder (default %(default)s); rerun to resume")
    p.add_argument("--grid", default="configs/demo.py", help="grid config[:variant] (default %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="concurrent jobs (each already uses every core)")
    p.add_argument("--no-embeddings", action="store_true", help="skip the t-SNE maps in the report")


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from fetal_ssl_jax.experiments import runner
    from fetal_ssl_jax.experiments.sweep import load_jobs, write_job_files
    from fetal_ssl_jax.report import cli as report_cli, tables
    t0 = time.time()
    try:
        cfg, jobs = load_jobs(args.grid, overrides, args.workdir)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"launch.py demo: {e}", file=sys.stderr)
        return 2
    workdir = os.path.abspath(args.workdir)
    # The 24 evaluation jobs compile the same few programs: share them through JAX's persistent cache.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(workdir, "jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    write_job_files(jobs, workdir, cfg)
    print(f"demo: {len(jobs)} steps in {workdir} (logs in {workdir}/logs)")
    try:
        counts = runner.run_jobs(jobs, workdir, runner.make_slots("", args.jobs),
                                 on_done=lambda j: tables.write_tables(workdir) if j.kind == "eval" else None)
    except KeyboardInterrupt:
        return 130
    if counts.get("failed") or counts.get("blocked"):
        print(f"demo: {counts}; see {workdir}/sweep_status.json and the logs", file=sys.stderr)
        return 1
    paths = report_cli.write_report(workdir, embeddings=not args.no_embeddings)
    _, summary, _ = tables.write_tables(workdir)
    print("\nTest macro-F1 (%), mean ± std over seeds:\n")
    print(tables.markdown_table(summary))
    print("\n" + "\n".join(report_cli.highlights(summary)))
    print(f"\nreport: {paths[0]}  ({(time.time() - t0) / 60:.1f} min)")
    return 0
