"""A pretraining run survives a preemption and a hard kill and ends where the uninterrupted run ends, bit for
bit: losses and the whole state, MoCo's queue, key encoder and pointer included (issue 3).

Four ``launch.py pretrain`` runs: uninterrupted; preempted (SIGTERM after its first logged step: a
checkpoint, exit 75); continued and killed (SIGKILL once its next regular checkpoint exists); rerun to the
end. They share the suite's persistent compilation cache, so only the first pays for compiling. The final
checkpoints are restored through the project's own Checkpointer with abstract shardings and compared leaf by
leaf. MoCo because its state is the largest (queue, key encoder, pointer besides parameters and optimizer).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import jax
import numpy as np

from engine_helpers import ROOT, env_with_devices, launch_cmd, losses_by_step
from fetal_ssl_jax import configuration
from fetal_ssl_jax.data.synthetic_store import ensure_synthetic_store
from fetal_ssl_jax.methods import registry
from fetal_ssl_jax.train import mesh as mesh_lib
from fetal_ssl_jax.train import step as step_lib
from fetal_ssl_jax.train.checkpointing import Checkpointer
from fetal_ssl_jax.train.optimizers import make_optimizer

STEPS, CKPT_EVERY, BATCH = 16, 4, 16


def _checkpoints(workdir: str) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if re.fullmatch(r"\d+", n)) if os.path.isdir(d) else []


def _final_state(config: str, overrides: list[str], workdir: str):
    cfg = configuration.load(config, overrides)
    method = registry.get_method(cfg)
    tx, _ = make_optimizer(cfg.optim, BATCH, STEPS)
    abstract = step_lib.abstract_state(method, tx, (2, 32, 32, 1), mesh_lib.make_mesh(1))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        return jax.device_get(ckpt.restore(STEPS, abstract))
    finally:
        ckpt.close()


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not os.path.exists(path) and proc.poll() is None:
        time.sleep(0.01)


def test_sigterm_then_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    store = str(tmp_path / "frames")
    ensure_synthetic_store(store, 4, 16, 32, seed=0)
    config = os.path.join(ROOT, "configs", "moco.py:tiny")
    overrides = [f"--config.train.steps={STEPS}", f"--config.train.ckpt_every={CKPT_EVERY}",
                 "--config.train.log_every=1", f"--config.data.store={store}", "--config.data.temporal_window=2"]
    env = env_with_devices(1)  # the suite's compilation cache: the killed run and the rerun load what `full` compiled

    def cmd(workdir: str) -> list[str]:
        return launch_cmd("pretrain", "--config", config, "--workdir", workdir, *overrides)

    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    p = subprocess.run(cmd(full), env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-4000:]

    # preemption: SIGTERM once a step is logged -> a checkpoint of the current step, exit 75
    proc = subprocess.Popen(cmd(killed), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(os.path.join(killed, "metrics.jsonl"), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-3000:]
    assert "preempted (SIGTERM)" in err
    saved = _checkpoints(killed)
    assert saved and saved[-1] < STEPS - CKPT_EVERY, saved

    # the continued run, hard-killed once its next regular checkpoint exists
    later = (saved[-1] // CKPT_EVERY + 1) * CKPT_EVERY
    proc = subprocess.Popen(cmd(killed), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _wait_for(os.path.join(killed, "checkpoints", str(later)), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not os.path.exists(os.path.join(killed, "encoder", "encoder.json"))
    assert later <= _checkpoints(killed)[-1] < STEPS

    p = subprocess.run(cmd(killed), env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-4000:]

    a, b = _final_state(config, overrides, full), _final_state(config, overrides, killed)
    assert int(a.step) == int(b.step) == STEPS
    assert int(a.extra["queue_ptr"]) == int(b.extra["queue_ptr"]) == (STEPS * BATCH) % a.extra["queue"].shape[0]
    np.testing.assert_array_equal(b.extra["queue"], a.extra["queue"])
    for name in ("params", "batch_stats", "opt_state", "extra"):
        la, lb = jax.tree.leaves(getattr(a, name)), jax.tree.leaves(getattr(b, name))
        assert len(la) == len(lb) > 0
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=name)
    la, lb = losses_by_step(full), losses_by_step(killed)
    assert sorted(la) == sorted(lb) == list(range(1, STEPS + 1))
    np.testing.assert_array_equal([lb[s] for s in sorted(lb)], [la[s] for s in sorted(la)])
