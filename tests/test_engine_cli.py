"""Pretraining through the CLI: device-count invariance, the NaN stop and its rerun, 2-process jax.distributed
(the sweep's emitted multi-host line). Exact resume after SIGTERM and SIGKILL: tests/test_methods_resume.py."""
from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest

from fetal_ssl_jax import configuration
from fetal_ssl_jax.kernels import onednn

from engine_helpers import (ROOT, TINY_BT_ARGS, TINY_BT_STEPS, encoder_leaves, env_with_devices, free_port,
                            losses_by_step, run_launch)

# Device counts differ only by float re-association (~1e-7 in the first loss), which a tiny
# BarlowTwins run (8-channel ResNet, batch 16) amplifies chaotically after ~8 steps even at a low
# LR; device-count comparisons therefore cover only the first steps, while resume is compared bit-exactly over all STEPS. With the oneDNN CPU convolutions the weight
# gradient's partial sums are grouped differently on 1 and 4 devices (per shard, then psum), which
# starts the same divergence earlier (2e-5 at step 4, 1e-3 at step 5): the default path is compared
# over COMPARE_ONEDNN steps at 1e-5. XLA's convolutions drift later but by an amount that depends on the
# CPU (AVX-512: 1e-7 through step 6; AVX2: 1e-7 through step 5, then 1.3e-4 at step 6), so they are
# compared over COMPARE_XLA steps at 1e-5, one step short of the earliest divergence seen.
STEPS = TINY_BT_STEPS
COMPARE_ONEDNN = 3
COMPARE_XLA = 4
ARGS = ["--config", os.path.join(ROOT, "configs/barlowtwins.py:tiny"), *TINY_BT_ARGS,
        "--config.train.ckpt_every=4", "--config.train.log_every=1", "--config.train.progress=False",
        "--config.train.async_checkpoint=False"]


@pytest.fixture(scope="module", autouse=True)
def frame_store(tmp_path_factory):
    """One small frame store shared by every run of this module (so all runs see identical frames)."""
    from fetal_ssl_jax.data.synthetic_store import ensure_synthetic_store
    path = str(tmp_path_factory.mktemp("frames"))
    ensure_synthetic_store(path, num_videos=4, frames=16, size=32, seed=0)
    ARGS.append(f"--config.data.store={path}")
    yield path
    ARGS.remove(f"--config.data.store={path}")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, frame_store):
    """Uninterrupted run on 4 devices; the reference for the tests below."""
    wd = str(tmp_path_factory.mktemp("bt4"))
    run_launch(["pretrain", *ARGS, "--workdir", wd], devices=4)
    return wd


def test_metrics_and_encoder_written(baseline):
    losses = losses_by_step(baseline)
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert all(np.isfinite(v) for v in losses.values())
    rows = [json.loads(l) for l in open(os.path.join(baseline, "metrics.jsonl"))]
    for key in ("loss", "on_diag", "off_diag", "lr", "images_per_sec", "embedding_std", "grad_norm"):
        assert key in rows[-1], key
    every = int(configuration.load(os.path.join(ROOT, "configs", "barlowtwins.py:tiny")).train.rankme_every)
    assert every > 0 and {r["step"] for r in rows if "rankme" in r} == set(range(every, STEPS + 1, every))
    assert os.path.exists(os.path.join(baseline, "encoder", "encoder.json"))


@pytest.mark.conv_paths
def test_one_device_gives_same_losses(baseline, tmp_path):
    """1 vs 4 devices through the CLI, over the steps before the drift of the convolutions this run uses (the
    oneDNN kernel by default; XLA's under `make test-xla` / `make test-conv-paths`, or where the kernel cannot
    be built: the whole module, baseline included, then runs XLA's)."""
    run_launch(["pretrain", *ARGS, "--workdir", str(tmp_path)], devices=1)
    a, b = losses_by_step(baseline), losses_by_step(str(tmp_path))
    steps = sorted(a)[:COMPARE_ONEDNN if onednn.available() else COMPARE_XLA]
    np.testing.assert_allclose([b[s] for s in steps], [a[s] for s in steps], rtol=1e-5)


@pytest.mark.conv_paths
def test_emitted_two_process_job_matches_one_process_four_devices(baseline, frame_store, tmp_path):
    """The sweep's multi-host pretraining line (``--emit commands``, 2 processes x 2 fake CPU devices through
    jax.distributed) trains what one process on 4 devices trains: one 2-process run checks both the emitted
    command and the cross-process all-reduce (its pretrain overrides are this module's ARGS)."""
    sweep = str(tmp_path / "sweep")
    overrides = tuple(a for a in ARGS[2:] if not a.startswith("--config.data.store="))
    run_launch(["sweep", "--grid", "configs/paper_grid.py:tiny", "--workdir", sweep, "--emit", "commands",
                "--only", "pretrain/*", "--config.methods=('barlowtwins',)",
                f"--config.frame_data.main.store={frame_store}", "--config.pretrain_processes=2",
                f"--config.pretrain_overrides={overrides!r}"])
    lines = open(os.path.join(sweep, "commands.txt")).read().splitlines()
    assert len(lines) == 1 and '--coordinator "${COORDINATOR}"' in lines[0] and "--num-processes 2" in lines[0]
    coord = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen(["bash", "-c", lines[0]], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=dict(env_with_devices(2), COORDINATOR=coord, PROCESS_ID=str(i)))
             for i in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    wd = os.path.join(sweep, "pretrain", "barlowtwins")
    log = open(os.path.join(sweep, "logs", "pretrain__barlowtwins.p0.log")).read()
    assert os.path.exists(os.path.join(sweep, "logs", "pretrain__barlowtwins.p1.log"))
    assert f"pretrain barlowtwins: {STEPS} steps" in log, log[-3000:]
    assert os.path.exists(os.path.join(wd, "encoder", "encoder.json"))
    steps = [json.loads(x)["step"] for x in open(os.path.join(wd, "metrics.jsonl"))]
    assert steps == list(range(1, STEPS + 1))  # written once, by process 0
    a, b = losses_by_step(baseline), losses_by_step(wd)
    # Same 4 shards either way, but the cross-process all-reduce sums in another order than the in-process
    # one; with XLA's convolutions that drifted 1e-3 by step 6 (2e-5 at step 5, 4e-7 at step 4), so the
    # comparison covers the steps before any such drift (COMPARE_XLA), whichever kernels run.
    steps = sorted(a)[:COMPARE_XLA]
    np.testing.assert_allclose([b[s] for s in steps], [a[s] for s in steps], rtol=1e-4)
    # the line is idempotent: a rerun on a finished job returns at once
    t = time.time()
    assert subprocess.run(["bash", "-c", lines[0]], cwd=ROOT, env=env_with_devices(1)).returncode == 0
    assert time.time() - t < 2


def test_injected_nan_stops_with_message_then_another_seed_trains_another_run(baseline, tmp_path):
    """A NaN injected at step 6 stops the run with a message and keeps the last good checkpoint (step 6 is also a
    RankMe step of the tiny config: the guard must stop it before RankMe's SVD meets the NaN embeddings); the rerun
    continues from it to the end. Both runs use --config.seed=1, so the finished run is also the check that
    the seed changes the initialisation, augmentation and data order (runtime inputs: 4 devices as the
    baseline, and the NaN is put into the state, not the step, so both runs load every program from the
    compilation cache). Same seed, same run: tests/test_methods_resume.py."""
    wd = str(tmp_path)
    seeded = [*ARGS, "--workdir", wd, "--config.seed=1"]
    assert 6 % int(configuration.load(ARGS[1]).train.rankme_every) == 0  # the NaN step is a RankMe step
    p = run_launch(["pretrain", *seeded, "--config.train.debug_nan_step=5"], devices=4, check=False)
    assert p.returncode == 3, p.stderr[-3000:]
    assert "non-finite values at step 6" in p.stderr and "loss" in p.stderr
    assert "--config.optim.base_lr" in p.stderr  # the message says how to continue
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["4"]
    # the rerun (NaN injection off) continues from the last good checkpoint, to the uninterrupted run's end
    run_launch(["pretrain", *seeded], devices=4)
    a, b = losses_by_step(baseline), losses_by_step(wd)
    assert sorted(b) == list(range(1, STEPS + 1)) and min(b.values()) >= 1
    assert os.path.exists(os.path.join(wd, "encoder", "encoder.json"))
    # another seed, another run: every loss and the encoder differ from the baseline's (seed 0)
    assert all(a[s] != b[s] for s in a)
    assert any(not np.array_equal(x, y) for x, y in zip(encoder_leaves(baseline), encoder_leaves(wd)))


def test_second_run_on_busy_workdir_is_refused(tmp_path):
    from fetal_ssl_jax.workdir_lock import WorkdirLock
    with WorkdirLock(str(tmp_path), "test holder"):
        p = run_launch(["pretrain", *ARGS, "--workdir", str(tmp_path)], devices=1, check=False)
    assert p.returncode == 2
    assert "is in use by pid" in p.stderr and str(os.getpid()) in p.stderr
