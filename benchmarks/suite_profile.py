"""Where the test suite's time goes: compile, trace, lowering and subprocess CPU per test, as tables.

    python benchmarks/suite_profile.py --cold                 # `make test`, cold compilation cache
    python benchmarks/suite_profile.py -- -n 2 tests/test_engine_step.py
    python benchmarks/suite_profile.py --analyse suite.jsonl  # the tables again, from an earlier run's log

Runs pytest (by default what `make test` runs) with ``benchmarks/suite_profile/sitecustomize.py`` on
PYTHONPATH: every process of the run, both workers and each CLI subprocess, logs JAX's own monitoring events
(each program compiled or loaded from the persistent cache, each trace and lowering) and its CPU seconds at
exit. Most of the suite's time is XLA compiling small programs (README, Tests and benchmarks), so the tables
say which tests pay for which programs: the figures to look at before and after a change meant to shorten
the suite, and on a slower machine (an AVX2-only CPU) to see what scales. The hook adds a few percent of
wall time; a process killed with SIGKILL (the resume tests kill some) logs no exit, so its CPU is missing.
``--cold`` empties the suite's compilation cache first (tests/conftest.py), as on a fresh machine.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOK = os.path.join(ROOT, "benchmarks", "suite_profile")


def _short(test: str) -> str:
    return test.replace("tests/", "", 1) if test else "(collection / no test)"


def analyse(records: list[dict], top: int = 20) -> dict:
    """Totals, the costliest tests and the costliest programs, from the hook's JSON lines."""
    procs: dict[int, dict] = {}
    for r in records:
        p = procs.setdefault(r["pid"], dict(argv=r["argv"], test=r["test"], cpu=0.0, worker=False))
        if r["kind"] == "exit":
            p["cpu"] = r["cpu"]
        # pytest-xdist's workers run `python -c ...` (execnet); the main process runs pytest itself
        p["worker"] = p["worker"] or r["argv"].startswith("-c") or "pytest" in r["argv"]
    tests: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    programs: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    totals = collections.Counter()
    for r in records:
        t, in_worker = _short(r["test"]), procs[r["pid"]]["worker"]
        if in_worker and r["kind"] in ("compile", "trace", "lower"):
            tests[t]["worker_cost"] += r["cpu"] if r["kind"] == "compile" else r["s"]
        if r["kind"] == "compile":
            key = "load" if r["hit"] else "compile"
            tests[t][f"{key}_cpu"] += r["cpu"]
            totals[f"{key}_cpu"] += r["cpu"]
            totals[f"{key}s"] += 1
            if not r["hit"]:
                programs[r["name"]]["cpu"] += r["cpu"]
                programs[r["name"]]["n"] += 1
                programs[r["name"]][f"test:{t}"] += r["cpu"]
        elif r["kind"] in ("trace", "lower"):
            tests[t][r["kind"]] += r["s"]
            totals[r["kind"]] += r["s"]
        elif r["kind"] == "exit" and not in_worker:
            tests[t]["sub_cpu"] += r["cpu"]
            tests[t]["subprocesses"] += 1
    for p in procs.values():
        totals["worker_cpu" if p["worker"] else "sub_cpu"] += p["cpu"]
    totals["processes"] = len(procs)
    totals["subprocesses"] = sum(not p["worker"] for p in procs.values())

    # A test's CPU: its subprocesses' whole CPU plus what it compiled, loaded, traced and lowered in its worker
    # (the rest of a worker's CPU, running the programs and the tests' Python, is not split by test here).
    rows = []
    for t, c in tests.items():
        rows.append(dict(test=t, cpu=round(c["sub_cpu"] + c["worker_cost"], 1),
                         compile_cpu=round(c["compile_cpu"], 1), load_cpu=round(c["load_cpu"], 1),
                         trace_s=round(c["trace"], 1), lower_s=round(c["lower"], 1),
                         subprocesses=c["subprocesses"], subprocess_cpu=round(c["sub_cpu"], 1)))
    rows.sort(key=lambda r: -r["cpu"])
    progs = [dict(program=n, compiles=c["n"], cpu=round(c["cpu"], 1),
                  tests=", ".join(f"{k[5:]}" for k, _ in sorted(((k, v) for k, v in c.items() if k.startswith("test:")),
                                                                 key=lambda kv: -kv[1])[:3]))
             for n, c in programs.items()]
    progs.sort(key=lambda r: -r["cpu"])
    return dict(totals={k: round(v, 1) if isinstance(v, float) else v for k, v in totals.items()},
                tests=rows[:top], programs=progs[:top])


def _table(rows: list[dict], cols: list[str]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def report(summary: dict) -> str:
    t = summary["totals"]
    lines = [f"CPU: {t.get('worker_cpu', 0)} s in the pytest processes + {t.get('sub_cpu', 0)} s in "
             f"{t.get('subprocesses', 0)} subprocesses; XLA compiles: {t.get('compiles', 0)} taking "
             f"{t.get('compile_cpu', 0)} CPU-s; persistent-cache loads: {t.get('loads', 0)} taking "
             f"{t.get('load_cpu', 0)} CPU-s; tracing {t.get('trace', 0)} s, lowering {t.get('lower', 0)} s",
             "", "Costliest tests (CPU-s: their subprocesses' whole CPU + their in-worker compiles, traces, "
             "lowerings):", "",
             _table(summary["tests"], ["cpu", "compile_cpu", "load_cpu", "trace_s", "lower_s", "subprocesses",
                                       "test"]),
             "", "Costliest programs (compiles that missed the persistent cache; name = the jitted function):", "",
             _table(summary["programs"], ["cpu", "compiles", "program", "tests"])]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cold", action="store_true", help="empty the suite's compilation cache first")
    ap.add_argument("--log", default="", help="the JSON-lines log (default: a new temporary file)")
    ap.add_argument("--analyse", default="", help="only print the tables of an earlier run's log")
    ap.add_argument("--out", default="", help="also write the summary as JSON here")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments (default: run `make test`)")
    a = ap.parse_args()
    log, code = a.analyse, 0
    if not log:
        log = a.log or os.path.join(tempfile.mkdtemp(prefix="suite-profile-"), "suite.jsonl")
        if a.cold:
            shutil.rmtree(os.path.join(tempfile.gettempdir(), f"fetal-ssl-jax-test-jitcache-{os.getuid()}"),
                          ignore_errors=True)
        env = dict(os.environ, FETAL_SSL_JAX_SUITE_PROFILE=log,
                   PYTHONPATH=os.pathsep.join(p for p in (HOOK, os.environ.get("PYTHONPATH", "")) if p))
        t0 = time.time()
        cmd = [sys.executable, "-m", "pytest", *a.pytest_args] if a.pytest_args else ["make", "-s", "test"]
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        print(f"\npytest exit {code}, {time.time() - t0:.1f} s wall; log: {log}")
    summary = analyse([json.loads(line) for line in open(log)], a.top)
    print(report(summary))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main())
