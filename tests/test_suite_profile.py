"""benchmarks/suite_profile.py: its hook logs a real process's compiles, and its tables add up what it logged."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks import suite_profile


def test_hook_logs_compiles_cache_loads_and_exit_of_a_real_process(tmp_path):
    log = str(tmp_path / "suite.jsonl")
    code = ("import jax, jax.numpy as jnp\n"
            "f = jax.jit(lambda x: jnp.sin(x) * 3.0)\n"
            "f(jnp.ones(5)).block_until_ready()\n")
    env = dict(os.environ, FETAL_SSL_JAX_SUITE_PROFILE=log, PYTEST_CURRENT_TEST="tests/x.py::t (call)",
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
               PYTHONPATH=os.pathsep.join([suite_profile.HOOK, os.environ.get("PYTHONPATH", "")]))
    for _ in range(2):  # the second process loads the program from the persistent cache
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    recs = [json.loads(line) for line in open(log)]
    pids = sorted({r["pid"] for r in recs})
    assert len(pids) == 2 and all(r["test"] == "tests/x.py::t" for r in recs)
    ours = [[r for r in recs if r["pid"] == p and r["kind"] == "compile" and "lambda" in r["name"]] for p in pids]
    assert [len(o) for o in ours] == [1, 1]
    assert not ours[0][0]["hit"] and ours[1][0]["hit"] and ours[0][0]["cpu"] > 0
    assert {r["kind"] for r in recs} >= {"compile", "trace", "lower", "exit"}
    # a process without the variable logs nothing (the hook is inert)
    env.pop("FETAL_SSL_JAX_SUITE_PROFILE")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert len(open(log).readlines()) == len(recs)


def test_analyse_attributes_worker_and_subprocess_cpu_to_tests():
    w, s = dict(argv="-c import sys;exec(...)"), dict(argv="/r/launch.py pretrain")
    recs = [
        dict(pid=1, test="tests/a.py::t1", kind="compile", name="jit(step)", s=2.0, cpu=3.0, hit=False, **w),
        dict(pid=1, test="tests/a.py::t1", kind="trace", s=0.5, **w),
        dict(pid=1, test="tests/a.py::t2", kind="compile", name="jit(step)", s=0.2, cpu=0.1, hit=True, **w),
        dict(pid=1, test="", kind="exit", cpu=50.0, wall=60.0, **w),
        dict(pid=2, test="tests/b.py::t3", kind="compile", name="jit(step)", s=4.0, cpu=4.0, hit=False, **s),
        dict(pid=2, test="tests/b.py::t3", kind="lower", s=0.25, **s),
        dict(pid=2, test="tests/b.py::t3", kind="exit", cpu=9.0, wall=10.0, **s),
    ]
    out = suite_profile.analyse(recs)
    t = out["totals"]
    assert (t["worker_cpu"], t["sub_cpu"], t["subprocesses"], t["processes"]) == (50.0, 9.0, 1, 2)
    assert (t["compiles"], t["compile_cpu"], t["loads"], t["load_cpu"]) == (2, 7.0, 1, 0.1)
    rows = {r["test"]: r for r in out["tests"]}
    assert rows["b.py::t3"]["cpu"] == 9.0 and rows["b.py::t3"]["subprocesses"] == 1  # its process's whole CPU
    assert rows["a.py::t1"]["cpu"] == 3.5 and rows["a.py::t2"]["cpu"] == 0.1  # in-worker compile + trace, load
    assert out["programs"][0]["program"] == "jit(step)" and out["programs"][0]["compiles"] == 2
    assert out["programs"][0]["cpu"] == 7.0
    assert "| 9.0 |" in suite_profile.report(out)
