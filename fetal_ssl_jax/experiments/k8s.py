"""``sweep --emit k8s``: Kubernetes manifests (GKE) for the sweep's pending jobs, plus submit.sh.

One file per job, in dependency order (``NNN-<name>.yaml``):

- a multi-process pretraining: a JobSet (default; needs the JobSet controller, which GKE TPU
  multi-host slices use) or an Indexed Job with its headless Service (``--k8s-multihost
  indexed``). Every pod gets ``FETAL_SSL_JAX_COORDINATOR`` = the DNS name of pod 0
  (``<jobset>-workers-0-0.<jobset>`` / ``<job>-0.<job>``), ``FETAL_SSL_JAX_NUM_PROCESSES`` and
  ``FETAL_SSL_JAX_PROCESS_ID`` = its completion index; launch.py starts jax.distributed from them.
- data preparation with ``--prepare-shards N``: one Indexed Job of N pods (``--shard
  $JOB_COMPLETION_INDEX/N``), then the merge as an ordinary Job.
- everything else (simulation, preparation, evaluation): an ordinary Job.

TPU pods request ``google.com/tpu`` chips and select their slice with the
``cloud.google.com/gke-tpu-accelerator`` / ``gke-tpu-topology`` node labels; GPU pods request
``nvidia.com/gpu`` (and ``cloud.google.com/gke-accelerator`` when a GPU type is given).
A ``gs://`` workdir or store is mounted with GKE's GCS FUSE CSI driver at ``/gcs/<bucket>``
(the pods' service account needs access to the bucket: Workload Identity, ``--k8s-service-account``).
"""
from __future__ import annotations

import dataclasses
import math
import os
import shlex
from typing import Any, Sequence

import yaml

from fetal_ssl_jax.experiments import remote as remote_lib
from fetal_ssl_jax.experiments.jobs import Job, stages
from fetal_ssl_jax.train.mesh import COORDINATOR_PORT

JOBSET_API = "jobset.x-k8s.io/v1alpha2"


@dataclasses.dataclass
class K8sOptions:
    image: str = "fetal-ssl-jax:latest"   # an image holding the repository at `root` with its .venv
    root: str = "/app"
    python: str = "/app/.venv/bin/python"
    namespace: str = "default"
    workdir: str = ""                     # the sweep folder in the pods ('' = same path); gs://bucket/path mounts
    multihost: str = "jobset"             # jobset | indexed
    tpu: str = ""                         # GKE TPU accelerator, e.g. tpu-v5-lite-podslice ('' = no TPU)
    tpu_topology: str = "2x4"             # pretraining slice (hosts = chips / chips per host = processes)
    eval_tpu_topology: str = "2x2"        # evaluation: a single-host slice
    tpu_chips_per_host: int = 4
    gpus: int = 0                         # nvidia.com/gpu per pod for pretraining and evaluation
    gpu_type: str = ""                    # e.g. nvidia-l4 (node selector cloud.google.com/gke-accelerator)
    cpu: str = "4"                        # CPU request of every pod
    memory: str = "16Gi"
    service_account: str = ""
    backoff_limit: int = 2


def write_k8s(jobs: Sequence[Job], sweep_dir: str, opts: K8sOptions, name: str = "sweep") -> list[str]:
    out = os.path.join(sweep_dir, "k8s")
    os.makedirs(out, exist_ok=True)
    rem = remote_lib.Remote(os.path.abspath(sweep_dir), opts.workdir, opts.root, opts.python)
    stage_of = {j.id: k for k, st in enumerate(stages(jobs)) for j in st}
    for j in jobs:  # every bucket any job touches, mounted in every pod (one set for the whole sweep)
        rem.line(j)
    written, plan = [], []
    for n, (job, shards) in enumerate(remote_lib.groups(list(jobs))):
        docs, kind, kname = manifests(job, shards, rem, opts, name)
        path = os.path.join(out, f"{n:03d}-{kname}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False, width=1000)
        written.append(path)
        plan.append((stage_of[job.id], kind, kname, os.path.basename(path)))
    submit = os.path.join(out, "submit.sh")
    with open(submit, "w") as f:
        f.write(_submit(plan, opts.namespace))
    os.chmod(submit, 0o755)
    return written + [submit]


def manifests(job: Job, shards: int, rem: remote_lib.Remote, o: K8sOptions, name: str
              ) -> tuple[list[dict], str, str]:
    """(documents, kind to wait for ('job' | 'jobset'), object name) of one job."""
    kname = remote_lib.k8s_name(name, job.info.get("shard_of", job.id) + ("-shards" if shards > 1 else ""))
    labels = {"app.kubernetes.io/part-of": "fetal-ssl-jax", "fetal-ssl-jax/sweep": remote_lib.k8s_name(name, "")[:63],
              "fetal-ssl-jax/kind": job.kind}
    if shards > 1:
        line = rem.line(job, shard_var="${JOB_COMPLETION_INDEX}")
        return [_job(kname, labels, _pod(job, line, rem, o, []), o, completions=shards)], "job", kname
    line = rem.line(job)
    if job.processes <= 1:
        return [_job(kname, labels, _pod(job, line, rem, o, []), o)], "job", kname
    n = job.processes
    if o.multihost == "jobset":
        coord = f"{kname}-workers-0-0.{kname}"
    else:
        coord = f"{kname}-0.{kname}"
    env = [{"name": "FETAL_SSL_JAX_COORDINATOR", "value": f"{coord}:{COORDINATOR_PORT}"},
           {"name": "FETAL_SSL_JAX_NUM_PROCESSES", "value": str(n)},
           {"name": "FETAL_SSL_JAX_PROCESS_ID", "valueFrom": {"fieldRef": {
               "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
    pod = _pod(job, line, rem, o, env)
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": COORDINATOR_PORT, "name": "coordinator"}]
    if o.multihost == "jobset":
        js = {"apiVersion": JOBSET_API, "kind": "JobSet",
              "metadata": {"name": kname, "namespace": o.namespace, "labels": labels},
              "spec": {"failurePolicy": {"maxRestarts": o.backoff_limit},
                       "network": {"enableDNSHostnames": True},
                       "replicatedJobs": [{"name": "workers", "replicas": 1, "template": {
                           "spec": _job_spec(pod, n, backoff=0)}}]}}
        if o.tpu:
            js["metadata"]["annotations"] = {"alpha.jobset.sigs.k8s.io/exclusive-topology":
                                             "cloud.google.com/gke-nodepool"}
        return [js], "jobset", kname
    pod["spec"]["subdomain"] = kname
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": kname, "namespace": o.namespace, "labels": labels},
           "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                    "selector": {"batch.kubernetes.io/job-name": kname},
                    "ports": [{"name": "coordinator", "port": COORDINATOR_PORT, "targetPort": COORDINATOR_PORT}]}}
    return [svc, _job(kname, labels, pod, o, completions=n, backoff=0)], "job", kname


def _job_spec(pod: dict, completions: int, backoff: int) -> dict:
    spec: dict[str, Any] = {"backoffLimit": backoff}
    if completions > 1:
        spec.update(completionMode="Indexed", completions=completions, parallelism=completions)
    spec["template"] = pod
    return spec


def _job(kname: str, labels: dict, pod: dict, o: K8sOptions, completions: int = 1, backoff: int | None = None) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": kname, "namespace": o.namespace, "labels": labels},
            "spec": _job_spec(pod, completions, o.backoff_limit if backoff is None else backoff)}


def _pod(job: Job, line: str, rem: remote_lib.Remote, o: K8sOptions, env: list[dict]) -> dict:
    accel = job.kind in ("pretrain", "eval")
    requests: dict[str, str] = {"cpu": o.cpu, "memory": o.memory}
    limits: dict[str, str] = {}
    selector: dict[str, str] = {}
    if accel and o.tpu:
        topo = o.tpu_topology if job.processes > 1 else o.eval_tpu_topology
        chips = math.prod(int(x) for x in topo.split("x"))
        hosts = max(1, chips // o.tpu_chips_per_host)
        if job.kind == "pretrain" and hosts != job.processes:
            raise ValueError(f"TPU topology {topo} has {hosts} hosts of {o.tpu_chips_per_host} chips, but the grid "
                             f"asks for {job.processes} pretraining processes (--config.pretrain_processes={hosts})")
        per_pod = min(chips, o.tpu_chips_per_host)
        requests["google.com/tpu"] = limits["google.com/tpu"] = str(per_pod)
        selector = {"cloud.google.com/gke-tpu-accelerator": o.tpu, "cloud.google.com/gke-tpu-topology": topo}
    elif accel and o.gpus:
        limits["nvidia.com/gpu"] = str(o.gpus)
        if o.gpu_type:
            selector = {"cloud.google.com/gke-accelerator": o.gpu_type}
    container: dict[str, Any] = {"name": "job", "image": o.image, "workingDir": o.root,
                                 "command": ["bash", "-c", line],
                                 "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}] + env,
                                 "resources": {"requests": requests, **({"limits": limits} if limits else {})}}
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if selector:
        spec["nodeSelector"] = selector
    if o.service_account:
        spec["serviceAccountName"] = o.service_account
    meta: dict[str, Any] = {"labels": {"app.kubernetes.io/part-of": "fetal-ssl-jax"}}
    if rem.buckets:
        meta["annotations"] = {"gke-gcsfuse/volumes": "true"}
        vols, mounts = [], []
        for b in sorted(rem.buckets):
            vname = remote_lib.k8s_name("gcs", b, 63)
            vols.append({"name": vname, "csi": {"driver": "gcsfuse.csi.storage.gke.io", "volumeAttributes": {
                "bucketName": b, "mountOptions": "implicit-dirs"}}})
            mounts.append({"name": vname, "mountPath": f"{remote_lib.GCS_MOUNT}/{b}"})
        spec["volumes"] = vols
        container["volumeMounts"] = mounts
    return {"metadata": meta, "spec": spec}


def _submit(plan: list[tuple[int, str, str, str]], namespace: str) -> str:
    ns = shlex.quote(namespace)
    lines = ["#!/bin/bash",
             "# Applies the sweep's manifests stage by stage; each stage waits until all its jobs have completed.",
             "# Rerunnable: finished objects are left alone, a failed one is deleted and created again, and every",
             "# container skips work whose output already exists.",
             "set -euo pipefail", 'cd "$(dirname "$0")"',
             "state() {  # kind name -> Complete|Completed|Failed|''",
             f"  kubectl get \"$1\" \"$2\" -n {ns} -o "
             "jsonpath='{.status.conditions[?(@.status==\"True\")].type}' 2>/dev/null || true",
             "}",
             "submit() {  # kind name file",
             '  case "$(state "$1" "$2")" in',
             '    *Complete*) echo "done already: $1/$2"; return 0;;',
             f'    *Failed*) kubectl delete "$1" "$2" -n {ns} --wait=true;;',
             "  esac",
             f'  kubectl apply -n {ns} -f "$3"',
             "}",
             "wait_for() {  # kind name",
             "  while true; do",
             '    case "$(state "$1" "$2")" in',
             '      *Complete*) return 0;;',
             '      *Failed*) echo "FAILED: $1/$2 (kubectl logs -n ' + namespace + ' -l job-name=$2)" >&2; return 1;;',
             "    esac",
             "    sleep 20",
             "  done",
             "}"]
    for k in sorted({p[0] for p in plan}):
        group = [p for p in plan if p[0] == k]
        lines.append(f"# stage {k}")
        lines += [f"submit {kind} {kname} {shlex.quote(fname)}" for _, kind, kname, fname in group]
        lines += [f"wait_for {kind} {kname}" for _, kind, kname, _ in group]
    lines.append('echo "all stages complete"')
    return "\n".join(lines) + "\n"
