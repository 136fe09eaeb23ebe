"""Shared helpers for engine tests: subprocess runs of launch.py and reading their outputs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np

from xla_env import xla_flags_with_devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The suite's tiny BarlowTwins run on 4 devices: test_engine_cli.py's CLI runs (12 steps) and test_monitor.py's
# in-process runs (its first 6 steps). The overrides that change the compiled step (total steps: the LR
# schedule; LR; RankMe's rows per step) are these, so both compile one program: whichever runs second loads it
# from the suite's compilation cache (tests/conftest.py) instead of compiling it again (~7 CPU-s).
TINY_BT_STEPS = 12
TINY_BT_ARGS = [f"--config.train.steps={TINY_BT_STEPS}", "--config.optim.base_lr=0.02"]


def env_with_devices(n: int) -> dict[str, str]:
    """The test session's environment (with its compilation cache, tests/conftest.py) for a CLI run on n fake
    CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags_with_devices(n, os.environ.get("XLA_FLAGS", ""))
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def launch_cmd(*args: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "launch.py"), *args]


def run_launch(args: list[str], devices: int = 1, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(launch_cmd(*args), env=env_with_devices(devices), cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"launch.py {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def losses_by_step(workdir: str, key: str = "loss") -> dict[int, float]:
    """Last logged value per step (a resumed run logs some steps twice)."""
    out: dict[int, float] = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            out[row["step"]] = row[key]
    return out


def encoder_leaves(workdir: str) -> list[np.ndarray]:
    import jax
    from fetal_ssl_jax.train.encoder_io import load_encoder
    _, variables, _ = load_encoder(workdir)
    return [np.asarray(x) for x in jax.tree.leaves(variables)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
