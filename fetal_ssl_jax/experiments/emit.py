"""Cluster backends: the sweep's pending jobs as command lines or SLURM array scripts.

Every emitted line is idempotent (``test -e <done marker> || python launch.py ...``), so a
batch system may rerun or resubmit anything. Multi-process pretraining lines carry
``${COORDINATOR}`` and ``${PROCESS_ID}``: run the same line on every host with those set.
Under SLURM the coordinator flags are dropped and ``srun`` starts one task per node;
``launch.py`` then calls ``jax.distributed.initialize()`` from the SLURM environment.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from typing import Sequence

from fetal_ssl_jax.experiments.jobs import Job, stages
from fetal_ssl_jax.experiments.runner import log_path


@dataclasses.dataclass
class SlurmOptions:
    partition: str = ""
    account: str = ""
    time: str = "24:00:00"
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem: str = ""
    max_parallel: int = 0          # array throttle (%N); 0 = no limit
    extra: Sequence[str] = ()      # raw '#SBATCH ...' option strings, e.g. '--qos=high'
    setup: str = ""                # shell line run before each job (module load, venv activate)


def write_commands(jobs: Sequence[Job], sweep_dir: str, python: str = sys.executable) -> list[str]:
    """Writes commands.txt (one line per pending job, dependency order) and jobs.json; returns paths."""
    os.makedirs(sweep_dir, exist_ok=True)
    pending = [j for j in jobs if not j.done()]
    stage_of = {j.id: k for k, st in enumerate(stages(jobs)) for j in st}
    lines = [j.shell(python, log=_log(sweep_dir, j)) for j in pending]
    for j in pending:
        os.makedirs(os.path.dirname(log_path(sweep_dir, j)), exist_ok=True)
    cmd_path = os.path.join(sweep_dir, "commands.txt")
    with open(cmd_path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    meta = [dict(id=j.id, kind=j.kind, stage=stage_of[j.id], deps=j.deps, processes=j.processes, marker=j.marker,
                 command=line) for j, line in zip(pending, lines)]
    json_path = os.path.join(sweep_dir, "jobs.json")
    with open(json_path, "w") as f:
        json.dump(meta, f, indent=1)
    return [cmd_path, json_path]


def _log(sweep_dir: str, job: Job) -> str:
    """The job's log; each process of a multi-process job writes its own (…p${PROCESS_ID}.log)."""
    path = log_path(sweep_dir, job)
    return path[:-len(".p0.log")] + ".p${PROCESS_ID:-0}.log" if job.processes > 1 else path


def write_slurm(jobs: Sequence[Job], sweep_dir: str, opts: SlurmOptions, name: str = "sweep",
                python: str = sys.executable) -> list[str]:
    """One sbatch array script per (stage, job kind) + submit.sh chaining them with afterok; returns paths."""
    out = os.path.join(sweep_dir, "slurm")
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    written, scripts = [], []
    for k, stage in enumerate(stages(jobs)):
        pending = [j for j in stage if not j.done()]
        for kind in sorted({j.kind for j in pending}):
            group = [j for j in pending if j.kind == kind]
            nodes = max(j.processes for j in group)
            tag = f"stage{k}_{kind}"
            lines_path = os.path.join(out, tag + ".txt")
            with open(lines_path, "w") as f:
                for j in group:
                    os.makedirs(os.path.dirname(log_path(sweep_dir, j)), exist_ok=True)
                    f.write(j.without_dist().shell(python, log=log_path(sweep_dir, j) if nodes == 1 else None)
                            + "\n")
            script = os.path.join(out, tag + ".sbatch")
            with open(script, "w") as f:
                f.write(_sbatch(f"{name}-{tag}", lines_path, len(group), nodes, kind, opts, out))
            written += [lines_path, script]
            scripts.append((k, tag, script))
    submit = os.path.join(out, "submit.sh")
    with open(submit, "w") as f:
        f.write("#!/bin/bash\n# Submits the sweep's stages in order; each waits for all earlier stages (afterok).\n"
                "set -euo pipefail\ndeps=\"\"\n")
        for k in sorted({s[0] for s in scripts}):
            f.write("stage_ids=\"\"\n")
            for kk, tag, script in scripts:
                if kk != k:
                    continue
                f.write(f"id=$(sbatch --parsable ${{deps:+--dependency=afterok:$deps}} {shlex.quote(script)})\n"
                        f"echo \"submitted {tag}: $id\"\nstage_ids=\"${{stage_ids:+$stage_ids:}}$id\"\n")
            f.write("deps=\"${deps:+$deps:}$stage_ids\"\n")
    os.chmod(submit, 0o755)
    return written + [submit]


def _sbatch(job_name: str, lines_path: str, n: int, nodes: int, kind: str, o: SlurmOptions, out: str) -> str:
    gpu = kind in ("pretrain", "eval") and o.gpus_per_node > 0
    head = ["#!/bin/bash", f"#SBATCH --job-name={job_name}",
            f"#SBATCH --array=0-{n - 1}" + (f"%{o.max_parallel}" if o.max_parallel else ""),
            f"#SBATCH --output={out}/logs/{job_name}_%A_%a.out",
            f"#SBATCH --nodes={nodes}", "#SBATCH --ntasks-per-node=1",
            f"#SBATCH --cpus-per-task={o.cpus_per_task}", f"#SBATCH --time={o.time}"]
    if gpu:
        head.append(f"#SBATCH --gpus-per-node={o.gpus_per_node}")
    for flag, val in (("partition", o.partition), ("account", o.account), ("mem", o.mem)):
        if val:
            head.append(f"#SBATCH --{flag}={val}")
    head += [f"#SBATCH {e}" for e in o.extra]
    body = ["set -euo pipefail", o.setup,
            f'CMD=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(lines_path)})',
            'echo "[$(date)] task $SLURM_ARRAY_TASK_ID on $(hostname): $CMD"',
            # one task per node; with several nodes launch.py initialises jax.distributed from SLURM's variables
            'srun --ntasks-per-node=1 bash -c "$CMD"']
    return "\n".join(head + [""] + [b for b in body if b]) + "\n"
