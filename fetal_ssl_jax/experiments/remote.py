"""What the cloud backends (tpu-vm, k8s, skypilot) share: a job's command as a remote machine runs it.

A job's arguments hold paths of this machine: the repository (config files) and the sweep
folder. On a TPU VM, a Kubernetes pod or a SkyPilot node the repository is ``root`` (the
command runs there, so config paths become relative) and the sweep folder is ``workdir``
(by default the same path). Every ``gs://bucket/path`` (a remote workdir, or a store given
in the grid) becomes ``/gcs/bucket/path``: our ArrayRecord reader and the run folders use
plain file I/O, so a bucket is read and written through a FUSE mount (GKE's GCS FUSE CSI
volume, SkyPilot's MOUNT mode, gcsfuse on TPU VMs), which each backend adds for the
buckets collected here. Lines stay idempotent (``test -e <marker> || ...``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex

from fetal_ssl_jax.experiments.jobs import ROOT, Job
from fetal_ssl_jax.object_storage import FUSE_ROOT

GCS_MOUNT = FUSE_ROOT
_GS = re.compile(r"gs://([a-z0-9][a-z0-9._-]{1,220})(/[^\s'\"]*)?")
SHARD = "__SHARD__"  # stands for the shard index in an array job's line (replaced by the backend's variable)


@dataclasses.dataclass
class Remote:
    sweep_dir: str                    # the sweep folder here (absolute, as in the jobs' arguments)
    workdir: str = ""                 # the sweep folder as the jobs see it ('' = the same path); may be gs://...
    root: str = "."                   # the repository on the remote machine; commands run there
    python: str = "python"
    buckets: set = dataclasses.field(default_factory=set)

    def path(self, text: str) -> str:
        """Local sweep folder -> remote workdir, repository paths -> relative, gs://b/p -> /gcs/b/p."""
        if self.workdir and self.workdir.rstrip("/") != self.sweep_dir:
            text = text.replace(self.sweep_dir, self.workdir.rstrip("/"))
        text = text.replace(ROOT + "/", "")

        def mount(m: re.Match) -> str:
            self.buckets.add(m.group(1))
            return f"{GCS_MOUNT}/{m.group(1)}{m.group(2) or ''}"
        return _GS.sub(mount, text)

    def job(self, job: Job) -> Job:
        """The job with remote paths; multi-process flags dropped (each backend's environment starts
        jax.distributed, see train/mesh.py distributed_args)."""
        j = job.without_dist()
        return dataclasses.replace(j, args=[self.path(a) for a in j.args], marker=self.path(j.marker),
                                   workdir=self.path(j.workdir))

    def line(self, job: Job, shard_var: str = "") -> str:
        """``cd ROOT && test -e MARKER || PYTHON launch.py ...``; a prepare-shard job's index becomes ``shard_var``."""
        j = self.job(job)
        if shard_var and job.kind == "prepare-shard":
            i, n = job.info["shard"], job.info["shards"]
            args = list(j.args)
            args[args.index("--shard") + 1] = f"{SHARD}/{n}"
            marker = j.marker.replace(f"shard-{i}-of-{n}", f"shard-{SHARD}-of-{n}")
            if shlex.quote(marker) != marker:
                raise ValueError(f"array jobs need store paths without spaces or quotes: {marker}")
            j = dataclasses.replace(j, args=args, marker=marker)
        text = f"cd {self.root} && " + j.shell(self.python, launch="launch.py")
        return text.replace(SHARD, shard_var) if shard_var else text

    @property
    def gs_workdir(self) -> bool:
        return self.workdir.startswith("gs://")


def groups(jobs: list[Job]) -> list[tuple[Job, int]]:
    """Pending jobs, with the N shards of one prepare job folded into one (first shard, N) array entry."""
    out: list[tuple[Job, int]] = []
    seen: set[str] = set()
    for j in jobs:
        if j.done():
            continue
        if j.kind == "prepare-shard":
            key = j.info["shard_of"]
            if key in seen:
                continue
            seen.add(key)
            shards = [s for s in jobs if s.kind == "prepare-shard" and s.info.get("shard_of") == key]
            first = min(shards, key=lambda s: s.info["shard"])
            out.append((first, j.info["shards"]))
        else:
            out.append((j, 1))
    return out


def k8s_name(prefix: str, job_id: str, limit: int = 40) -> str:
    """A DNS-1035 label (lowercase letters, digits, '-'; starts with a letter) for a job; long ids get a hash."""
    text = re.sub(r"[^a-z0-9]+", "-", f"{prefix}-{job_id}".lower()).strip("-")
    if not text[:1].isalpha():
        text = "j-" + text
    if len(text) > limit:
        text = text[:limit - 9].rstrip("-") + "-" + hashlib.sha1(job_id.encode()).hexdigest()[:8]
    return text


def quote(text: str) -> str:
    return shlex.quote(text)
