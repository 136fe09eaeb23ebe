"""A real sweep (simulate, prepare, probe) interrupted mid-job restarts without rerunning finished jobs."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from engine_helpers import ROOT, env_with_devices, launch_cmd, run_launch


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
