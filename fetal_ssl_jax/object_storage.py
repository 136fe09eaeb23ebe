"""Stores and run folders on object storage (``gs://``, ``s3://``): read and written through a FUSE mount.

What works natively and what does not (checked offline in tests/test_object_storage.py):
- orbax writes checkpoints to ``gs://`` natively (tensorstore), but a run folder holds more than
  checkpoints: the run lock (``flock``), metrics.jsonl, the config and encoder JSON, written with plain
  file I/O; so a workdir must be a file-system path.
- the ArrayRecord C++ reader (array_record / grain) does open ``gs://`` URLs itself, but a store is
  found through its JSON index (manifest.json, splits, fractions), read with plain file I/O.
So both live on a FUSE-mounted bucket: ``gcsfuse --implicit-dirs BUCKET /gcs/BUCKET`` on a VM, GKE's
GCS FUSE CSI volume in a pod, ``mode: MOUNT`` file mounts in SkyPilot. ``launch.py sweep --emit
k8s|skypilot|tpu-vm`` (and ``pretrain --emit``) do this for every ``gs://`` path they are given:
``gs://BUCKET/PATH`` becomes ``/gcs/BUCKET/PATH`` and the bucket is mounted there.
"""
from __future__ import annotations

import re

FUSE_ROOT = "/gcs"
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://([^/]+)(/.*)?$")


def fuse_path(url: str) -> str:
    """gs://bucket/path -> /gcs/bucket/path (where the emitted jobs mount the bucket); other paths unchanged."""
    m = _URL.match(url)
    if not m or m.group(1) != "gs":
        return url
    return f"{FUSE_ROOT}/{m.group(2)}{m.group(3) or ''}"


def require_file_path(path: str, what: str) -> None:
    """Refuses an object-storage URL with what to do instead (FileNotFoundError: the CLIs' usage error)."""
    m = _URL.match(str(path))
    if m:
        hint = (f"mount the bucket (gcsfuse --implicit-dirs {m.group(2)} {FUSE_ROOT}/{m.group(2)}) and give "
                f"{fuse_path(path)}" if m.group(1) == "gs" else "mount it with a FUSE driver and give its path")
        raise FileNotFoundError(f"{what} {path}: a {m.group(1)}:// URL is not a folder; {hint}. The jobs written by "
                                "`launch.py sweep --emit k8s|skypilot|tpu-vm` mount gs:// paths themselves "
                                "(README: Stores and run folders on cloud storage)")
