"""The ``--emit`` backends' command-line options, shared by ``launch.py sweep`` and ``launch.py pretrain``.

commands (emit.py), slurm (emit.py), tpu-vm (tpu_vm.py), k8s (k8s.py), skypilot (skypilot.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from fetal_ssl_jax.experiments.jobs import COORD, PID, Job

BACKENDS = ("commands", "slurm", "tpu-vm", "k8s", "skypilot")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--emit", choices=BACKENDS, default=None,
                   help="write the pending jobs for a cluster instead of running them here")
    p.add_argument("--python", default=sys.executable, help="interpreter in emitted commands / slurm lines")
    p.add_argument("--remote-workdir", default="",
                   help="tpu-vm/k8s/skypilot: the run folder as the remote machines see it (default: the same "
                        "path); gs://bucket/path is mounted at /gcs/bucket/path (GCS FUSE)")
    g = p.add_argument_group("--emit slurm")
    g.add_argument("--slurm-partition", default="")
    g.add_argument("--slurm-account", default="")
    g.add_argument("--slurm-time", default="24:00:00")
    g.add_argument("--slurm-gpus-per-node", type=int, default=1)
    g.add_argument("--slurm-cpus-per-task", type=int, default=8)
    g.add_argument("--slurm-mem", default="")
    g.add_argument("--slurm-max-parallel", type=int, default=0, help="array throttle (%%N)")
    g.add_argument("--slurm-extra", action="append", default=[], help="extra '#SBATCH' option, repeatable")
    g.add_argument("--slurm-setup", default="", help="shell line before each job, e.g. 'source .venv/bin/activate'")
    t = p.add_argument_group("--emit tpu-vm (gcloud compute tpus tpu-vm ssh/scp)")
    t.add_argument("--tpu-name", default="fetal-ssl-jax", help="TPU VM / pod slice name")
    t.add_argument("--tpu-zone", default="us-central2-b")
    t.add_argument("--tpu-project", default="")
    t.add_argument("--tpu-setup", default="", help="extra shell line on every worker after the install")
    k = p.add_argument_group("--emit k8s (Kubernetes / GKE manifests)")
    k.add_argument("--k8s-image", default="fetal-ssl-jax:latest", help="image with the repository and its .venv")
    k.add_argument("--k8s-root", default="/app", help="the repository's folder in the image")
    k.add_argument("--k8s-python", default="/app/.venv/bin/python")
    k.add_argument("--k8s-namespace", default="default")
    k.add_argument("--k8s-multihost", choices=("jobset", "indexed"), default="jobset",
                   help="multi-process pretraining as a JobSet or as an Indexed Job + headless Service")
    k.add_argument("--k8s-tpu", default="", help="GKE TPU accelerator, e.g. tpu-v5-lite-podslice")
    k.add_argument("--k8s-tpu-topology", default="2x4", help="pretraining slice topology")
    k.add_argument("--k8s-eval-tpu-topology", default="2x2", help="evaluation slice topology (one host)")
    k.add_argument("--k8s-tpu-chips-per-host", type=int, default=4)
    k.add_argument("--k8s-gpus", type=int, default=0, help="nvidia.com/gpu per pretraining/evaluation pod")
    k.add_argument("--k8s-gpu-type", default="", help="e.g. nvidia-l4 (node selector)")
    k.add_argument("--k8s-cpu", default="4")
    k.add_argument("--k8s-memory", default="16Gi")
    k.add_argument("--k8s-service-account", default="", help="pods' service account (bucket access)")
    s = p.add_argument_group("--emit skypilot (task YAMLs)")
    s.add_argument("--sky-accelerators", default="", help="pretraining, e.g. A100:8 or tpu-v5e-16 ('' = CPU)")
    s.add_argument("--sky-eval-accelerators", default="", help="evaluation ('' = as pretraining)")
    s.add_argument("--sky-cpus", default="8+", help="simulation / data preparation nodes")
    s.add_argument("--sky-infra", default="", help="e.g. gcp, aws/us-east-1, k8s")
    s.add_argument("--sky-use-spot", action="store_true")
    s.add_argument("--sky-setup", default="", help="extra setup line after the install")


def write(jobs: Sequence[Job], out_dir: str, args: argparse.Namespace, name: str) -> tuple[list[str], str]:
    """Writes the backend's files for ``jobs`` under ``out_dir``; (paths, how to submit them)."""
    from fetal_ssl_jax.experiments import emit
    b = args.emit
    if b == "commands":
        return emit.write_commands(jobs, out_dir, args.python), "run the lines of commands.txt (in order)"
    if b == "slurm":
        opts = emit.SlurmOptions(partition=args.slurm_partition, account=args.slurm_account, time=args.slurm_time,
                                 gpus_per_node=args.slurm_gpus_per_node, cpus_per_task=args.slurm_cpus_per_task,
                                 mem=args.slurm_mem, max_parallel=args.slurm_max_parallel, extra=args.slurm_extra,
                                 setup=args.slurm_setup)
        return emit.write_slurm(jobs, out_dir, opts, name, args.python), \
            f"bash {os.path.join(out_dir, 'slurm', 'submit.sh')}"
    hint = ""
    if args.remote_workdir.startswith("gs://"):
        hint = f" (first copy the job files up: gcloud storage rsync -r {out_dir} {args.remote_workdir})"
    if b == "tpu-vm":
        from fetal_ssl_jax.experiments import tpu_vm
        o = tpu_vm.TpuVmOptions(tpu=args.tpu_name, zone=args.tpu_zone, project=args.tpu_project,
                                workdir=args.remote_workdir, setup=args.tpu_setup)
        return tpu_vm.write_tpu_vm(jobs, out_dir, o, name), f"bash {os.path.join(out_dir, 'tpu_vm', 'run.sh')}" + hint
    if b == "k8s":
        from fetal_ssl_jax.experiments import k8s
        o = k8s.K8sOptions(image=args.k8s_image, root=args.k8s_root, python=args.k8s_python,
                           namespace=args.k8s_namespace, workdir=args.remote_workdir, multihost=args.k8s_multihost,
                           tpu=args.k8s_tpu, tpu_topology=args.k8s_tpu_topology,
                           eval_tpu_topology=args.k8s_eval_tpu_topology,
                           tpu_chips_per_host=args.k8s_tpu_chips_per_host, gpus=args.k8s_gpus,
                           gpu_type=args.k8s_gpu_type, cpu=args.k8s_cpu, memory=args.k8s_memory,
                           service_account=args.k8s_service_account)
        return k8s.write_k8s(jobs, out_dir, o, name), f"bash {os.path.join(out_dir, 'k8s', 'submit.sh')}" + hint
    from fetal_ssl_jax.experiments import skypilot
    o = skypilot.SkyOptions(accelerators=args.sky_accelerators, eval_accelerators=args.sky_eval_accelerators,
                            cpus=args.sky_cpus, infra=args.sky_infra, use_spot=args.sky_use_spot,
                            workdir=args.remote_workdir, setup=args.sky_setup)
    return skypilot.write_skypilot(jobs, out_dir, o, name), \
        f"bash {os.path.join(out_dir, 'skypilot', 'submit.sh')}" + hint


def emit_pretrain(args: argparse.Namespace, overrides: list[str]) -> int:
    """``launch.py pretrain ... --emit BACKEND``: the one pretraining job, written under WORKDIR/<backend>/."""
    wd = os.path.abspath(args.workdir)
    path, _, variant = args.config.partition(":")
    n = max(1, int(args.num_processes or 1))
    jargs = ["pretrain", "--config", os.path.abspath(path) + (f":{variant}" if variant else ""), "--workdir", wd,
             *overrides]
    if n > 1:
        jargs += ["--coordinator", COORD, "--num-processes", str(n), "--process-id", PID]
    job = Job(id=f"pretrain/{os.path.basename(wd)}", kind="pretrain", args=jargs, workdir=wd,
              marker=os.path.join(wd, "encoder", "encoder.json"), processes=n)
    if job.done():
        print(f"launch.py pretrain: {wd} is finished already ({job.marker}); nothing to emit")
        return 0
    try:
        paths, how = write([job], wd, args, "fetal-ssl-jax")
    except ValueError as e:
        print(f"launch.py pretrain: {e}", file=sys.stderr)
        return 2
    print(f"{args.emit}: wrote " + ", ".join(paths) + f"\nsubmit with: {how}")
    return 0
