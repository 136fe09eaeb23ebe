"""A sweep is a list of ``Job``s: one ``launch.py`` command each, with dependencies and a done marker.

Jobs are plain data so that every backend (local sequential, local parallel over devices,
SLURM array, plain command list) runs the same commands; a job is finished when its
marker file exists (encoder.json, metrics.json, manifest.json, phantom.json), which is
what lets an interrupted sweep restart without rerunning finished work.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from typing import Iterable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(ROOT, "launch.py")
# Multi-process pretraining: these placeholders are filled per process by the runner (or by the
# batch system: PROCESS_ID / COORDINATOR environment variables in emitted command lines).
COORD, PID = "{coordinator}", "{process_id}"


@dataclasses.dataclass
class Job:
    id: str                      # 'data/synth-main', 'pretrain/barlowtwins', 'eval/finetune/random/f1/s0'
    kind: str                    # synth | prepare | pretrain | eval
    args: list[str]              # launch.py arguments (may hold COORD / PID placeholders)
    marker: str                  # file whose existence means "finished"
    workdir: str                 # output folder of the job
    deps: list[str] = dataclasses.field(default_factory=list)
    processes: int = 1           # > 1: multi-process (multi-host) job, one process per host / device group
    info: dict = dataclasses.field(default_factory=dict)  # method, protocol, fraction, seed, ... (for tables)

    def done(self) -> bool:
        return os.path.exists(self.marker)

    def argv(self, process_id: int = 0, coordinator: str = "") -> list[str]:
        """The subprocess command of process ``process_id``."""
        sub = {COORD: coordinator, PID: str(process_id)}
        return [sys.executable, LAUNCH] + [sub.get(a, a) for a in self.args]

    def without_dist(self) -> "Job":
        """The job with its --coordinator/--num-processes/--process-id flags removed (SLURM and TPU pods
        start jax.distributed from their own environment, see train/mesh.py)."""
        drop, args, skip = {"--coordinator", "--num-processes", "--process-id"}, [], False
        for a in self.args:
            if skip:
                skip = False
                continue
            if a in drop:
                skip = True
                continue
            args.append(a)
        return dataclasses.replace(self, args=args)

    def shell(self, python: str = "python", coordinator: str = "${COORDINATOR}", process_id: str = "${PROCESS_ID:-0}",
              log: str | None = None, launch: str = LAUNCH) -> str:
        """One idempotent shell line: skipped when the marker exists (any batch system can rerun it).
        ``launch``: launch.py as the executing machine sees it (e.g. 'launch.py' run from the repository)."""
        parts = []
        for a in self.args:
            if a == COORD:
                parts.append(f'"{coordinator}"')
            elif a == PID:
                parts.append(f'"{process_id}"')
            else:
                parts.append(shlex.quote(a))
        cmd = f"{python} {shlex.quote(launch)} " + " ".join(parts)
        if log:  # may hold ${PROCESS_ID}: double quotes (paths from the sweep hold no quotes or '$' otherwise)
            cmd += f' >> "{log}" 2>&1'

        return f"test -e {shlex.quote(self.marker)} || {cmd}"


def topological(jobs: Sequence[Job]) -> list[Job]:
    """Jobs in dependency order (stable otherwise); raises on unknown deps or cycles."""
    by_id = {j.id: j for j in jobs}
    for j in jobs:
        for d in j.deps:
            if d not in by_id:
                raise ValueError(f"job {j.id} depends on unknown job {d}")
    out, state = [], {}

    def visit(j: Job) -> None:
        if state.get(j.id) == 2:
            return
        if state.get(j.id) == 1:
            raise ValueError(f"dependency cycle through {j.id}")
        state[j.id] = 1
        for d in j.deps:
            visit(by_id[d])
        state[j.id] = 2
        out.append(j)

    for j in jobs:
        visit(j)
    return out


def stages(jobs: Sequence[Job]) -> list[list[Job]]:
    """Jobs grouped by dependency depth: stage k only needs stages < k (one SLURM array each)."""
    depth: dict[str, int] = {}
    by_id = {j.id: j for j in jobs}
    for j in topological(jobs):
        depth[j.id] = 1 + max((depth[d] for d in j.deps), default=-1)
    n = 1 + max(depth.values(), default=-1)
    return [[by_id[i] for i in depth if depth[i] == k] for k in range(n)]


def dedupe(jobs: Iterable[Job]) -> list[Job]:
    """Drops repeated ids (a data job shared by several grid parts), keeping the first."""
    seen: dict[str, Job] = {}
    for j in jobs:
        if j.id in seen:
            if seen[j.id].args != j.args:
                raise ValueError(f"two different jobs are both named {j.id}")
            continue
        seen[j.id] = j
    return list(seen.values())
