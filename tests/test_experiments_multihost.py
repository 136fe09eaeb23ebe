"""Multi-host pretraining from the sweep: an emitted command runs as 2 processes x 2 fake CPU devices."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from engine_helpers import ROOT, env_with_devices, free_port, run_launch


@pytest.mark.slow
def test_emitted_multihost_pretrain_runs_as_two_processes(tmp_path):
    from fetal_ssl_jax.data.synthetic_store import ensure_synthetic_store
    store = str(tmp_path / "frames")
    ensure_synthetic_store(store, num_videos=4, frames=16, size=32, seed=0)
    wd = str(tmp_path / "sweep")
    run_launch(["sweep", "--grid", "configs/paper_grid.py:tiny", "--workdir", wd, "--emit", "commands",
                "--only", "pretrain/*", "--config.methods=('barlowtwins',)", f"--config.frame_data.main.store={store}",
                "--config.pretrain_processes=2",
                "--config.pretrain_overrides=('--config.train.steps=3', '--config.train.async_checkpoint=False')"])
    lines = open(os.path.join(wd, "commands.txt")).read().splitlines()
    assert len(lines) == 1 and '--coordinator "${COORDINATOR}"' in lines[0] and "--num-processes 2" in lines[0]
    coord = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen(["bash", "-c", lines[0]], cwd=ROOT,
                              env=dict(env_with_devices(2), COORDINATOR=coord, PROCESS_ID=str(i)))
             for i in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    log = open(os.path.join(wd, "logs", "pretrain__barlowtwins.p0.log")).read()
    assert os.path.exists(os.path.join(wd, "logs", "pretrain__barlowtwins.p1.log"))
    assert "pretrain barlowtwins: 3 steps" in log, log[-3000:]
    assert os.path.exists(os.path.join(wd, "pretrain", "barlowtwins", "encoder", "encoder.json"))
    steps = [json.loads(x)["step"] for x in open(os.path.join(wd, "pretrain", "barlowtwins", "metrics.jsonl"))]
    assert steps == [1, 2, 3]  # written once, by process 0
    # the line is idempotent: a rerun on a finished job returns at once
    t = time.time()
    assert subprocess.run(["bash", "-c", lines[0]], cwd=ROOT, env=env_with_devices(1)).returncode == 0
    assert time.time() - t < 2
