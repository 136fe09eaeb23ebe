"""Real sweep jobs: an interrupted sweep restarts without rerunning finished jobs; an emitted
multi-host pretraining command runs as 2 processes x 2 fake CPU devices (jax.distributed)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from engine_helpers import ROOT, env_with_devices, free_port, launch_cmd, run_launch


def _launches(log: str) -> int:
    return sum(1 for line in open(log) if line.startswith("# ") and "launch.py" in line)


def test_real_sweep_interrupted_then_completed(tmp_path):
    wd = str(tmp_path / "sweep")
    args = ["sweep", "--grid", "configs/paper_grid.py:tiny", "--workdir", wd, "--only", "eval/probe/random/f100/s0",
            "--no-report"]
    p = subprocess.Popen(launch_cmd(*args), cwd=ROOT, env=env_with_devices(1), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    labelled = os.path.join(wd, "data", "labelled", "manifest.json")
    deadline = time.time() + 120
    while not os.path.exists(labelled) and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the probe job has started
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130, out
    assert "interrupted" in out
    r = run_launch(args, devices=1, timeout=240)
    assert "2 already finished, 1 to run" in r.stdout, r.stdout
    logs = os.path.join(wd, "logs")
    assert _launches(os.path.join(logs, "data__synth-main.log")) == 1
    assert _launches(os.path.join(logs, "data__labelled.log")) == 1
    assert os.path.exists(os.path.join(wd, "eval", "probe", "random", "f100", "s0", "metrics.json"))
    rows = open(os.path.join(wd, "runs.csv")).read().splitlines()
    assert len(rows) == 2 and rows[1].startswith("random,random,probe,100,0,")
    r = run_launch(args, devices=1)
    assert "3 already finished, 0 to run" in r.stdout


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
    log = open(os.path.join(wd, "logs", "pretrain__barlowtwins.log")).read()
    assert "pretrain barlowtwins: 3 steps" in log, log[-3000:]
    assert os.path.exists(os.path.join(wd, "pretrain", "barlowtwins", "encoder", "encoder.json"))
    import json
    steps = [json.loads(x)["step"] for x in open(os.path.join(wd, "pretrain", "barlowtwins", "metrics.jsonl"))]
    assert steps == [1, 2, 3]  # written once, by process 0
    # the line is idempotent: a rerun on a finished job returns at once
    t = time.time()
    assert subprocess.run(["bash", "-c", lines[0]], cwd=ROOT, env=env_with_devices(1)).returncode == 0
    assert time.time() - t < 2
