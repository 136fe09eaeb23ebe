"""Stores and run folders on object storage: gs:// paths go through a FUSE mount (what can be checked offline)."""
import os
import subprocess
import sys

import pytest

from fetal_ssl_jax import object_storage
from fetal_ssl_jax.data.frame_store import FrameStore
from fetal_ssl_jax.data.labelled_store import LabelledStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fuse_path_is_where_the_emitted_jobs_mount_the_bucket():
    assert object_storage.fuse_path("gs://fsj-bucket/paper/data") == "/gcs/fsj-bucket/paper/data"
    assert object_storage.fuse_path("gs://fsj-bucket") == "/gcs/fsj-bucket"
    assert object_storage.fuse_path("/data/frames") == "/data/frames"
    from fetal_ssl_jax.experiments import remote
    r = remote.Remote("/runs/x", "gs://fsj-bucket/x")
    assert r.path("--config.data.store=/runs/x/data/frames") == "--config.data.store=/gcs/fsj-bucket/x/data/frames"
    assert r.buckets == {"fsj-bucket"}


@pytest.mark.parametrize("opener", [FrameStore.open, LabelledStore.open])
def test_stores_refuse_urls_with_the_mount_to_use(opener):
    with pytest.raises(FileNotFoundError, match=r"gcsfuse --implicit-dirs fsj-bucket /gcs/fsj-bucket\) and give "
                                                 r"/gcs/fsj-bucket/stores/frames"):
        opener("gs://fsj-bucket/stores/frames")
    with pytest.raises(FileNotFoundError, match="FUSE"):
        opener("s3://bucket/stores/frames")


def test_run_folder_urls_are_refused_before_anything_starts(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), "pretrain", "--config",
                        "configs/barlowtwins.py:tiny", "--workdir", "gs://fsj-bucket/runs/bt"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert p.returncode == 2 and "give /gcs/fsj-bucket/runs/bt" in p.stderr, p.stderr
