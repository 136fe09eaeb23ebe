"""``sweep --emit skypilot``: one SkyPilot task YAML per pending job, plus submit.sh.

A task syncs the repository (``workdir``), installs it as the README says (``setup``: ``make``
builds .venv from requirements.txt, plus the jax wheel of the accelerator) and runs the job's
idempotent line (``run``). A multi-node pretraining task has ``num_nodes`` = processes;
SkyPilot runs ``run`` on every node and launch.py starts jax.distributed from
``SKYPILOT_NODE_IPS`` (the first is the coordinator) and ``SKYPILOT_NODE_RANK``. TPU pod slices
(``tpu-...`` accelerators) are one SkyPilot node; there JAX finds the workers itself
(``FETAL_SSL_JAX_DISTRIBUTED=auto``). Data preparation with ``--prepare-shards N`` is one task of
N nodes, node r converting shard r, then a merge task. ``gs://`` paths are mounted (MOUNT mode)
at ``/gcs/<bucket>``. submit.sh launches each stage's tasks in parallel (``sky launch --down``)
and waits for them before the next stage.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Any, Sequence

import yaml

from fetal_ssl_jax.experiments import remote as remote_lib
from fetal_ssl_jax.experiments.jobs import ROOT, Job, stages

SKY_WORKDIR = "~/sky_workdir"  # where SkyPilot syncs `workdir` on every node; setup and run start there


@dataclasses.dataclass
class SkyOptions:
    accelerators: str = ""           # pretraining, e.g. 'A100:8', 'L4:1', 'tpu-v5e-16' ('' = CPU only)
    eval_accelerators: str = ""      # evaluation ('' = the same as pretraining, or 'L4:1' for a TPU pod)
    cpus: str = "8+"                 # simulation and data preparation nodes
    infra: str = ""                  # e.g. 'gcp', 'aws/us-east-1', 'k8s' ('' = SkyPilot chooses)
    use_spot: bool = False
    workdir: str = ""                # the sweep folder on the nodes ('' = same path); gs://bucket/path mounts
    setup: str = ""                  # extra setup line after the install


def _platform(acc: str) -> str:
    """The Makefile's PLATFORM for these accelerators (its requirements set: CUDA or TPU jax, no oneDNN)."""
    if not acc:
        return "cpu"
    return "tpu" if acc.lower().startswith("tpu") else "cuda"


def _key(job: Job, shards: int) -> str:
    return job.info["shard_of"] + "-shards" if shards > 1 else job.id


def task(job: Job, shards: int, rem: remote_lib.Remote, o: SkyOptions, name: str) -> dict[str, Any]:
    is_accel = job.kind in ("pretrain", "eval")
    acc = (o.accelerators if job.kind == "pretrain" else (o.eval_accelerators or o.accelerators)) if is_accel else ""
    tpu = acc.lower().startswith("tpu")
    resources: dict[str, Any] = {}
    if acc:
        resources["accelerators"] = acc
    else:
        resources["cpus"] = o.cpus
    if o.infra:
        resources["infra"] = o.infra
    if o.use_spot:
        resources["use_spot"] = True
    if shards > 1:
        line, nodes = rem.line(job, shard_var="${SKYPILOT_NODE_RANK}"), shards
    else:
        line, nodes = rem.line(job), (1 if tpu else job.processes)
    setup = [f"make venv PLATFORM={_platform(acc)}"]  # the README's install for this platform
    if o.setup:
        setup.append(o.setup)
    t: dict[str, Any] = {"name": remote_lib.k8s_name(name, _key(job, shards), 60),
                         "num_nodes": nodes, "resources": resources, "workdir": ROOT}
    envs = {"PYTHONUNBUFFERED": "1"}
    if tpu and job.kind == "pretrain" and job.processes > 1:
        envs["FETAL_SSL_JAX_DISTRIBUTED"] = "auto"
    t["envs"] = envs
    if rem.buckets:
        t["file_mounts"] = {f"{remote_lib.GCS_MOUNT}/{b}": {"source": f"gs://{b}", "mode": "MOUNT"}
                            for b in sorted(rem.buckets)}
    t["setup"] = " && ".join(setup)
    t["run"] = line
    return t


def write_skypilot(jobs: Sequence[Job], sweep_dir: str, opts: SkyOptions, name: str = "sweep") -> list[str]:
    out = os.path.join(sweep_dir, "skypilot")
    os.makedirs(out, exist_ok=True)
    rem = remote_lib.Remote(os.path.abspath(sweep_dir), opts.workdir, SKY_WORKDIR, ".venv/bin/python")
    for j in jobs:  # collect every bucket first: each task mounts them all
        rem.line(j)
    stage_of = {j.id: k for k, st in enumerate(stages(jobs)) for j in st}
    written, plan = [], []
    for n, (job, shards) in enumerate(remote_lib.groups(list(jobs))):
        t = task(job, shards, rem, opts, name)
        path = os.path.join(out, f"{n:03d}-{t['name']}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(t, f, sort_keys=False, width=1000)
        written.append(path)
        plan.append((stage_of[job.id], remote_lib.k8s_name("fsj", _key(job, shards), 35),
                     os.path.basename(path)))
    submit = os.path.join(out, "submit.sh")
    lines = ["#!/bin/bash",
             "# Launches the sweep's SkyPilot tasks stage by stage (each stage in parallel, one cluster per task,",
             "# torn down when its job ends). Rerunnable: a task whose output exists finishes at once.",
             "set -uo pipefail", 'cd "$(dirname "$0")"', "fail=0"]
    for k in sorted({p[0] for p in plan}):
        lines.append(f"# stage {k}")
        lines += [f"sky launch -y --down -c {c} {shlex.quote(f)} > {shlex.quote(f[:-5] + '.log')} 2>&1 &"
                  for kk, c, f in plan if kk == k]
        lines.append("for p in $(jobs -p); do wait \"$p\" || fail=1; done")
        lines.append(f'if [ "$fail" != 0 ]; then echo "stage {k} failed: see skypilot/*.log" >&2; exit 1; fi')
    lines.append('echo "all stages complete"')
    with open(submit, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(submit, 0o755)
    return written + [submit]
