"""``sweep --emit tpu-vm``: one script that runs the sweep's pending jobs on a Cloud TPU VM (pod slice).

``tpu_vm/run.sh`` copies the repository to every worker (``gcloud compute tpus tpu-vm scp``),
installs it there (the README's install + ``jax[tpu]``), mounts the buckets of ``gs://``
paths with gcsfuse, then runs the jobs in dependency order, each through ``gcloud compute
tpus tpu-vm ssh NAME --zone Z --worker=... --command '...'``:

- pretraining on ``--worker=all``: one JAX process per host. With several hosts the line
  sets ``FETAL_SSL_JAX_DISTRIBUTED=auto`` and launch.py calls ``jax.distributed.initialize()``
  without arguments: JAX reads the slice's workers from the TPU metadata server.
- evaluation on worker 0.
- simulation and data preparation on worker 0 when the sweep folder is shared (a ``gs://``
  workdir); otherwise on every worker, each building an identical local copy (the builders
  are deterministic), so that every host of a multi-host pretraining finds the store.

Every line skips a finished job, so running run.sh again continues an interrupted sweep.
Multi-host pretraining writes one checkpoint from all hosts: give a ``gs://`` workdir.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Sequence

from fetal_ssl_jax.experiments import remote as remote_lib
from fetal_ssl_jax.experiments.jobs import ROOT, Job

REMOTE_ROOT = "~/fetal-ssl-jax"
INSTALL = "cd ~/fetal-ssl-jax && make venv PLATFORM=tpu"  # requirements-tpu.txt: jax[tpu], no CPU-only wheels


@dataclasses.dataclass
class TpuVmOptions:
    tpu: str = "fetal-ssl-jax"        # TPU VM (pod slice) name
    zone: str = "us-central2-b"
    project: str = ""                 # '' = gcloud's default project
    workdir: str = ""                 # the sweep folder on the workers ('' = same path); gs://bucket/path mounts
    setup: str = ""                   # extra shell line run on every worker after the install


def _gcloud(o: TpuVmOptions, verb: str, *args: str) -> str:
    parts = ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, "--zone", o.zone]
    if o.project:
        parts += ["--project", o.project]
    return " ".join(shlex.quote(p) if not p.startswith("$") else p for p in parts)


def write_tpu_vm(jobs: Sequence[Job], sweep_dir: str, opts: TpuVmOptions, name: str = "sweep") -> list[str]:
    out = os.path.join(sweep_dir, "tpu_vm")
    os.makedirs(out, exist_ok=True)
    rem = remote_lib.Remote(os.path.abspath(sweep_dir), opts.workdir, REMOTE_ROOT, ".venv/bin/python")
    hosts = max([j.processes for j in jobs] + [1])
    steps = []
    for job, shards in remote_lib.groups(list(jobs)):
        if shards > 1:
            lines = [rem.line(s) for s in jobs if s.kind == "prepare-shard"
                     and s.info.get("shard_of") == job.info["shard_of"]]
            if rem.gs_workdir:  # shared store: shard i on worker i % hosts, the workers in parallel
                for w in range(min(hosts, shards)):
                    steps.append((f"{job.info['shard_of']} shards on worker {w}", str(w),
                                  " && ".join(f"({x})" for x in lines[w::hosts]), True))
                steps.append(("wait for the shards", "", "", False))
                continue
            line = " && ".join(f"({x})" for x in lines)  # local stores: every worker converts all shards
        else:
            line = rem.line(job)
        if job.kind == "pretrain":
            worker = "all"
            if job.processes > 1:
                line = line.replace("&& test -e", "&& export FETAL_SSL_JAX_DISTRIBUTED=auto && test -e", 1)
        elif job.kind == "eval" or rem.gs_workdir:
            worker = "0"
        else:
            worker = "all"
        steps.append((job.id, worker, line, False))
    install = INSTALL
    head = ["#!/bin/bash",
            f"# The sweep '{name}' on the TPU VM {opts.tpu} ({opts.zone}); rerun to continue after an interruption.",
            "set -euo pipefail",
            "# 1. the repository on every worker, installed as the README says (make venv PLATFORM=tpu)",
            f"tar czf /tmp/fetal-ssl-jax.tgz --exclude=.venv --exclude=.git --exclude=runs -C {shlex.quote(ROOT)} .",
            _gcloud(opts, "scp", "/tmp/fetal-ssl-jax.tgz", f"{opts.tpu}:~/fetal-ssl-jax.tgz", "--worker=all"),
            _gcloud(opts, "ssh", opts.tpu, "--worker=all", "--command",
                    "mkdir -p ~/fetal-ssl-jax && tar xzf ~/fetal-ssl-jax.tgz -C ~/fetal-ssl-jax && " + install
                    + (f" && {opts.setup}" if opts.setup else ""))]
    if rem.buckets:
        mounts = " && ".join(f"sudo mkdir -p {remote_lib.GCS_MOUNT}/{b} && sudo chown $USER {remote_lib.GCS_MOUNT}/{b}"
                             f" && (mountpoint -q {remote_lib.GCS_MOUNT}/{b} || gcsfuse --implicit-dirs {b} "
                             f"{remote_lib.GCS_MOUNT}/{b})" for b in sorted(rem.buckets))
        head += ["# 2. buckets through gcsfuse (preinstalled on TPU VM images)",
                 _gcloud(opts, "ssh", opts.tpu, "--worker=all", "--command", mounts)]
    body = ["# jobs in dependency order (each skips itself when its output exists)"]
    for jid, worker, line, background in steps:
        if not line:  # the end of a group of background commands
            body += ['for p in $(jobs -p); do wait "$p"; done']
            continue
        body += [f"echo '[{jid}]'", _gcloud(opts, "ssh", opts.tpu, f"--worker={worker}", "--command", line)
                 + (" &" if background else "")]
    path = os.path.join(out, "run.sh")
    with open(path, "w") as f:
        f.write("\n".join(head + body) + "\n")
    os.chmod(path, 0o755)
    return [path]
