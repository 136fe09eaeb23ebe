"""`launch.py sweep --grid configs/paper_grid.py[:variant] --workdir DIR [--config.k=v ...]`.

Runs a grid of independent ``launch.py`` jobs (simulate/prepare data, pretrain each method,
evaluate every initialisation x protocol x fraction x seed), or writes them out for a
cluster. A job whose output marker exists is never rerun, so an interrupted sweep is
continued by running the same command again. After every finished evaluation the
tables ``runs.csv`` / ``results.csv`` (mean ± std over seeds) in DIR are rewritten.

Backends: sequential (default); ``--devices auto|0,1,..`` one job per GPU; ``--jobs N`` N
CPU jobs at once; ``--emit commands`` (commands.txt, one idempotent line per job, for any
batch system); ``--emit slurm`` (sbatch array script per stage + submit.sh); ``--emit tpu-vm``
(gcloud ssh lines for a TPU VM pod slice), ``--emit k8s`` (Job / JobSet manifests for GKE),
``--emit skypilot`` (task YAMLs). ``--prepare-shards N`` splits data preparation into N shards.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from fetal_ssl_jax import configuration


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", default="configs/paper_grid.py",
                   help="grid config file[:variant] (default %(default)s); --config.k=v overrides its fields")
    p.add_argument("--workdir", required=True, help="sweep folder: one subfolder per job, tables, logs, status")
    p.add_argument("--devices", default="", help="'auto' or '0,1,...': run one job per GPU at a time")
    p.add_argument("--jobs", type=int, default=1, help="concurrent CPU jobs when --devices is not given")
    p.add_argument("--only", nargs="*", default=[], metavar="GLOB",
                   help="run only jobs whose id matches (plus what they depend on), e.g. 'eval/probe/*'")
    p.add_argument("--list", action="store_true", help="print the jobs and their state, run nothing")
    p.add_argument("--max-jobs", type=int, default=0, help="start at most N jobs, then stop (0 = all)")
    p.add_argument("--no-report", action="store_true", help="do not write report.md + plots at the end")
    p.add_argument("--prepare-shards", type=int, default=1, metavar="N",
                   help="prepare each store as N shard jobs (prepare --shard I/N, an array job on slurm/k8s/"
                        "skypilot) plus a merge job (prepare merge) ahead of the jobs that need the store")
    from fetal_ssl_jax.experiments import backends
    backends.add_arguments(p)


def load_jobs(grid_spec: str, overrides: list[str], workdir: str, only: list[str] | None = None):
    from fetal_ssl_jax.experiments import grid as grid_lib
    cfg = configuration.load(grid_spec, overrides)
    jobs = grid_lib.select(grid_lib.expand(cfg, workdir), list(only or []))
    return cfg, jobs


def write_job_files(jobs, workdir: str, cfg) -> None:
    """sweep.json (the grid as run) and sweep_job.json in every evaluation folder (its label for the report)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "sweep.json"), "w") as f:
        json.dump(dict(grid=cfg.to_dict(), jobs=[dict(id=j.id, kind=j.kind, deps=j.deps, args=j.args,
                                                      processes=j.processes) for j in jobs]),
                  f, indent=1, default=str)
    for j in jobs:
        if j.kind in ("eval", "pretrain"):
            os.makedirs(j.workdir, exist_ok=True)
            path = os.path.join(j.workdir, "sweep_job.json")
            if not os.path.exists(path):
                with open(path, "w") as f:
                    json.dump(dict(j.info, id=j.id), f, indent=1)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from fetal_ssl_jax.experiments import backends, grid as grid_lib, runner
    try:
        cfg, jobs = load_jobs(args.grid, overrides, args.workdir, args.only)
        jobs = grid_lib.shard_prepare(jobs, args.prepare_shards)
    except (FileNotFoundError, KeyError, ValueError, AttributeError) as e:
        print(f"launch.py sweep: {e}", file=sys.stderr)
        return 2
    workdir = os.path.abspath(args.workdir)
    if args.list:
        for j in jobs:
            print(f"{'done   ' if j.done() else 'pending'} {j.id}")
        print(f"{len(jobs)} jobs, {sum(j.done() for j in jobs)} finished")
        return 0
    write_job_files(jobs, workdir, cfg)
    if args.emit:
        try:
            paths, how = backends.write(jobs, workdir, args, str(cfg.get("name", "sweep")))
        except ValueError as e:
            print(f"launch.py sweep: {e}", file=sys.stderr)
            return 2
        shown = paths if len(paths) <= 8 else paths[:3] + [f"... {len(paths) - 6} more ..."] + paths[-3:]
        print(f"{args.emit}: {sum(not j.done() for j in jobs)} pending jobs; wrote " + ", ".join(shown)
              + f"\nsubmit with: {how}")
        return 0
    from fetal_ssl_jax.report import tables

    def on_done(job) -> None:
        if job.kind == "eval":
            tables.write_tables(workdir)

    slots = runner.make_slots(args.devices, args.jobs)
    try:
        counts = runner.run_jobs(jobs, workdir, slots, on_done=on_done, max_jobs=args.max_jobs)
    except KeyboardInterrupt:
        return 130
    rows, summary, _ = tables.write_tables(workdir)
    print(f"sweep: {counts}; tables in {workdir}/results.csv ({len(rows)} runs, {len(summary)} settings)")
    if rows:
        print(tables.markdown_table(summary))
    if not args.no_report and rows and not counts.get("pending"):
        from fetal_ssl_jax.report import cli as report_cli
        report_cli.write_report(workdir, embeddings=False)
    return 1 if counts.get("failed") or counts.get("blocked") else 0
