"""Sweep bookkeeping without real jobs: grid expansion, interrupt + restart, --emit commands / slurm."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from fetal_ssl_jax import configuration
from fetal_ssl_jax.experiments import emit, grid, jobs as jobs_lib, runner

ROOT = jobs_lib.ROOT


def _jobs(tmp_path, spec="configs/paper_grid.py:tiny", overrides=()):
    cfg = configuration.load(os.path.join(ROOT, spec), list(overrides))
    return cfg, grid.expand(cfg, str(tmp_path))


def test_paper_grid_has_the_papers_jobs(tmp_path):
    _, js = _jobs(tmp_path, "configs/paper_grid.py")
    kinds = [j.kind for j in js]
    assert kinds.count("pretrain") == 7
    assert kinds.count("eval") == 8 * 2 * 3 * 3          # (7 SSL + random) x protocols x fractions x seeds
    _, js2 = _jobs(tmp_path, "configs/paper_grid.py", ["--config.imagenet_weights=/w/resnet50.safetensors"])
    ev = [j for j in js2 if j.kind == "eval"]
    assert len(ev) == 9 * 2 * 3 * 3
    im = [j for j in ev if j.info["init"] == "imagenet"][0]
    assert "--config.init=imagenet:/w/resnet50.safetensors" in im.args and im.deps == ["data/labelled"]
    bt = next(j for j in ev if j.id == "eval/finetune/barlowtwins/f1/s2")
    assert set(bt.deps) == {"pretrain/barlowtwins", "data/labelled"}
    assert f"--config.init={tmp_path}/pretrain/barlowtwins" in bt.args
    ids = [j.id for j in js]
    for j in js:  # dependency order
        assert all(ids.index(d) < ids.index(j.id) for d in j.deps)


def test_variance_vs_size_pretrains_on_equal_frames_from_more_and_more_patients(tmp_path):
    _, js = _jobs(tmp_path, "configs/variance_vs_size.py")
    synth = {j.id: j.args for j in js if j.kind == "synth"}
    names = ["p01", "p04", "p16", "p32"]
    assert set(synth) == {f"data/synth-{n}" for n in names}  # the labelled store reuses p32's export
    assert all(a[a.index("--preset") + 1] == "demo" and a[a.index("--videos") + 1] == "32" for a in synth.values())
    assert {int(a[a.index("--video-patients") + 1]) for a in synth.values()} == {1, 4, 16, 32}
    assert {j.id for j in js if j.kind == "pretrain"} == {f"pretrain/{n}/barlowtwins" for n in names}
    from fetal_ssl_jax.phantom import resolve
    cfgs = [resolve("demo", videos=32, patients=k) for k in (1, 32)]
    assert [c.num_videos() for c in cfgs] == [32, 32] and [c.video_patients() for c in cfgs] == [1, 32]
    labelled = next(j for j in js if j.id == "data/labelled")
    assert labelled.deps == ["data/synth-p32"]
    ev = [j for j in js if j.kind == "eval"]
    assert {j.info["init"] for j in ev} == {f"barlowtwins@{n}" for n in names} | {"random"}
    assert len(ev) == (len(names) + 1) * 2 * 3 and {j.info["protocol"] for j in ev} == {"probe"}


class FakeProc:
    """Finishes at once by creating the job's marker; counts launches."""

    def __init__(self, job, launches):
        launches.append(job.id)
        os.makedirs(os.path.dirname(job.marker), exist_ok=True)
        open(job.marker, "w").write("{}")

    def poll(self):
        return 0

    def terminate(self):
        pass


def test_interrupted_sweep_restarts_without_rerunning_finished_jobs(tmp_path):
    _, js = _jobs(tmp_path)
    sweep = str(tmp_path)
    launches: list[str] = []

    def interrupting(job, pid, coord, env, log):
        if len(launches) == 7:
            raise KeyboardInterrupt  # Ctrl-C while the 8th job starts
        return FakeProc(job, launches)

    with pytest.raises(KeyboardInterrupt):
        runner.run_jobs(js, sweep, launcher=interrupting, poll_s=0, log=lambda s: None)
    first = list(launches)
    assert len(first) == 7
    status = json.load(open(os.path.join(sweep, runner.STATUS)))
    assert status["counts"]["done"] == 7
    launches.clear()
    counts = runner.run_jobs(js, sweep, launcher=lambda j, *a: FakeProc(j, launches), poll_s=0, log=lambda s: None)
    assert counts == {"done": len(js)}
    assert not set(first) & set(launches), "a finished job was run again"
    assert sorted(first + launches) == sorted(j.id for j in js)
    launches.clear()
    runner.run_jobs(js, sweep, launcher=lambda j, *a: FakeProc(j, launches), poll_s=0, log=lambda s: None)
    assert launches == []


def test_failed_job_blocks_its_dependents_only(tmp_path):
    _, js = _jobs(tmp_path)
    launches: list[str] = []

    class Fail(FakeProc):
        def __init__(self, job, launches):
            launches.append(job.id)

        def poll(self):
            return 1

    def launcher(job, *a):
        return Fail(job, launches) if job.id == "pretrain/simclr" else FakeProc(job, launches)

    counts = runner.run_jobs(js, str(tmp_path), launcher=launcher, poll_s=0, log=lambda s: None)
    n_simclr_evals = sum(1 for j in js if j.kind == "eval" and j.info["init"] == "simclr")
    assert counts == {"done": len(js) - 1 - n_simclr_evals, "failed": 1, "blocked": n_simclr_evals}


def test_parallel_slots_get_one_device_each(tmp_path):
    _, js = _jobs(tmp_path)
    seen = []

    def launcher(job, pid, coord, env, log):
        seen.append(env.get("CUDA_VISIBLE_DEVICES"))
        return FakeProc(job, [])

    runner.run_jobs(js, str(tmp_path), runner.make_slots("0,1,2"), launcher=launcher, poll_s=0, log=lambda s: None)
    assert set(seen) == {"0", "1", "2"}


def test_emit_commands_are_idempotent_lines(tmp_path):
    _, js = _jobs(tmp_path)
    paths = emit.write_commands(js, str(tmp_path), python="python")
    lines = open(paths[0]).read().splitlines()
    assert len(lines) == len(js)
    assert lines[0].startswith("test -e ") and " || python " in lines[0] and "launch.py synth" in lines[0]
    probe = next(line for line in lines if "/eval/probe/random/f10/s1/" in line)
    assert "launch.py probe --config" in probe and "--config.seed=1" in probe and "--config.fraction=10" in probe
    meta = json.load(open(paths[1]))
    stage = {m["id"]: m["stage"] for m in meta}
    order = [m["id"] for m in meta]
    assert all(stage[d] < stage[m["id"]] and order.index(d) < order.index(m["id"]) for m in meta for d in m["deps"])
    # finished jobs are not emitted again
    open(_mk(js[0].marker), "w").close()
    assert len(open(emit.write_commands(js, str(tmp_path))[0]).read().splitlines()) == len(js) - 1
    # the lines run as they are: a finished job's line is a no-op that succeeds at once
    assert subprocess.run(["bash", "-c", js[0].shell()], timeout=10).returncode == 0


def _mk(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def test_emit_slurm_arrays_chained_by_stage(tmp_path):
    _, js = _jobs(tmp_path, overrides=["--config.pretrain_processes=2"])
    opts = emit.SlurmOptions(partition="gpu", time="02:00:00", gpus_per_node=4, extra=["--qos=high"],
                             setup="source .venv/bin/activate")
    paths = emit.write_slurm(js, str(tmp_path), opts, "paper")
    sd = os.path.join(str(tmp_path), "slurm")
    pre = open(os.path.join(sd, "stage2_pretrain.sbatch")).read()
    assert "#SBATCH --array=0-1" in pre and "#SBATCH --nodes=2" in pre and "#SBATCH --gpus-per-node=4" in pre
    assert "#SBATCH --partition=gpu" in pre and "#SBATCH --qos=high" in pre and "#SBATCH --time=02:00:00" in pre
    assert "srun --ntasks-per-node=1" in pre and "source .venv/bin/activate" in pre
    pre_lines = open(os.path.join(sd, "stage2_pretrain.txt")).read().splitlines()
    assert len(pre_lines) == 2 and all("--coordinator" not in line for line in pre_lines)  # SLURM env instead
    ev = open(os.path.join(sd, "stage3_eval.txt")).read().splitlines()
    ev2 = open(os.path.join(sd, "stage2_eval.txt")).read().splitlines()  # random init needs no pretraining
    assert len(ev) + len(ev2) == sum(j.kind == "eval" for j in js)
    assert all("random" in line for line in ev2)
    synth = open(os.path.join(sd, "stage0_synth.sbatch")).read()
    assert "--gpus-per-node" not in synth
    submit = open(paths[-1]).read()
    assert submit.index("stage0_synth") < submit.index("stage1_prepare") < submit.index("stage2_pretrain") \
        < submit.index("stage3_eval")
    assert "--dependency=afterok:$deps" in submit
    assert subprocess.run(["bash", "-n", paths[-1]]).returncode == 0
    for p in paths:
        if p.endswith(".sbatch"):
            assert subprocess.run(["bash", "-n", p]).returncode == 0, p


def test_sweep_cli_lists_and_emits(tmp_path):
    from engine_helpers import run_launch
    p = run_launch(["sweep", "--grid", "configs/variance_vs_size.py:tiny", "--workdir", str(tmp_path), "--list"])
    assert "pending pretrain/p08/barlowtwins" in p.stdout
    p = run_launch(["sweep", "--grid", "configs/paper_grid.py:tiny", "--workdir", str(tmp_path / "p"), "--emit",
                    "commands", "--config.seeds=(5,)", "--only", "eval/probe/random/*"])
    lines = open(tmp_path / "p" / "commands.txt").read().splitlines()
    assert len(lines) == 2 + 2 and all("--config.seed=5" in line for line in lines[2:])  # synth, labelled, 2 evals


def test_multi_process_job_starts_one_process_per_host_with_one_coordinator(tmp_path):
    _, js = _jobs(tmp_path, overrides=["--config.pretrain_processes=2"])
    calls = []

    def launcher(job, pid, coord, env, log):
        calls.append((job.id, pid, coord, env.get("PROCESS_ID"), job.argv(pid, coord)))
        return FakeProc(job, []) if pid == 0 else FakeProc.__new__(FakeProc)

    runner.run_jobs(js, str(tmp_path), runner.make_slots("", 2), launcher=launcher, poll_s=0, log=lambda s: None)
    pre = [c for c in calls if c[0] == "pretrain/simclr"]
    assert [c[1] for c in pre] == [0, 1] and pre[0][2] == pre[1][2] and pre[0][2].startswith("127.0.0.1:")
    argv = pre[1][4]
    assert argv[argv.index("--process-id") + 1] == "1" and argv[argv.index("--num-processes") + 1] == "2"
    assert argv[argv.index("--coordinator") + 1] == pre[0][2]


def test_protocol_overrides_reach_only_their_protocol(tmp_path):
    """The demo shortens fine-tuning (train.epochs) without passing a fine-tune key to the probe's config."""
    _, js = _jobs(tmp_path, "configs/demo.py")
    evals = [j for j in js if j.kind == "eval"]
    assert len(evals) == 2 * 2 * 2 * 3  # protocols x inits x fractions x seeds
    for j in evals:
        has = "--config.train.min_steps=100" in j.args
        assert has == (j.info["protocol"] == "finetune"), j.id
        assert "--config.model.width=0.5" in j.args  # eval_overrides still reach every protocol
