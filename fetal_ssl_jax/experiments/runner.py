"""Local backends: run sweep jobs as ``launch.py`` subprocesses, one per slot, in dependency order.

A slot is an environment: sequential = one slot; parallel over devices = one slot per
accelerator (``CUDA_VISIBLE_DEVICES=i``), or N CPU slots. A job whose done marker exists is
never started, so a sweep killed at any point and restarted redoes only unfinished jobs
(pretraining and fine-tuning resume from their own checkpoints). ``sweep_status.json``
records every job's state, return code, time and log after each change.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Protocol, Sequence

from fetal_ssl_jax.experiments.jobs import ROOT, Job

STATUS = "sweep_status.json"


class Handle(Protocol):
    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...


# (job, process id, coordinator, env, log path) -> running handle
Launcher = Callable[[Job, int, str, dict[str, str], str], Handle]


def subprocess_launcher(job: Job, pid: int, coordinator: str, env: dict[str, str], log: str) -> Handle:
    os.makedirs(os.path.dirname(log), exist_ok=True)
    f = open(log, "a")
    f.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(job.argv(pid, coordinator))}\n")
    f.flush()
    p = subprocess.Popen(job.argv(pid, coordinator), cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                         stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    f.close()
    return GroupProcess(p)


class GroupProcess:
    """A job's process in its own session; terminate() signals the whole group (decoder workers too)."""

    def __init__(self, p: subprocess.Popen):
        self.p = p

    def poll(self) -> int | None:
        return self.p.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.p.wait(timeout=timeout)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.p.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def detect_gpus() -> int:
    """Number of NVIDIA GPUs (nvidia-smi), 0 when none or no driver."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    except (OSError, subprocess.TimeoutExpired):
        return 0


def make_slots(devices: str = "", jobs: int = 1) -> list[dict[str, str]]:
    """Slot environments: ``devices`` '0,1,2' or 'auto' (every GPU) -> one slot per GPU; else ``jobs`` CPU slots."""
    if devices:
        ids = [str(i) for i in range(detect_gpus())] if devices == "auto" else \
            [d.strip() for d in devices.split(",") if d.strip()]
        if ids:
            return [{"CUDA_VISIBLE_DEVICES": d} for d in ids]
        print("sweep: no GPU found for --devices auto; running sequentially", file=sys.stderr)
    return [{} for _ in range(max(1, int(jobs)))]


@dataclasses.dataclass
class Running:
    job: Job
    handles: list[Handle]
    slots: list[int]
    start: float


class Status:
    """sweep_status.json: job id -> state (pending|running|done|failed|blocked|interrupted), rc, seconds, log."""

    def __init__(self, sweep_dir: str):
        self.path = os.path.join(sweep_dir, STATUS)
        self.rows: dict[str, dict[str, Any]] = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.rows = json.load(f).get("jobs", {})

    def set(self, jid: str, **kw: Any) -> None:
        self.rows.setdefault(jid, {}).update(kw, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))

    def save(self) -> None:
        tmp = self.path + ".tmp"
        counts: dict[str, int] = {}
        for r in self.rows.values():
            counts[r.get("state", "?")] = counts.get(r.get("state", "?"), 0) + 1
        with open(tmp, "w") as f:
            json.dump({"counts": counts, "jobs": self.rows}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


def log_path(sweep_dir: str, job: Job, pid: int = 0) -> str:
    name = job.id.replace("/", "__") + (f".p{pid}" if job.processes > 1 else "")
    return os.path.join(sweep_dir, "logs", name + ".log")


def run_jobs(jobs: Sequence[Job], sweep_dir: str, slots: Sequence[dict[str, str]] | None = None,
             launcher: Launcher = subprocess_launcher, on_done: Callable[[Job], None] | None = None,
             poll_s: float = 0.2, max_jobs: int = 0, log: Callable[[str], None] = print) -> dict[str, int]:
    """Runs unfinished jobs until all are done, failed or blocked by a failure; returns state counts.

    KeyboardInterrupt / SIGTERM stop the running jobs (their state becomes 'interrupted') and
    re-raise after the status is saved. ``max_jobs`` > 0 starts at most that many jobs.
    """
    os.makedirs(sweep_dir, exist_ok=True)
    slots = list(slots or [{}])
    status = Status(sweep_dir)
    by_id = {j.id: j for j in jobs}
    state: dict[str, str] = {}
    for j in jobs:
        state[j.id] = "done" if j.done() else "pending"
        status.set(j.id, state=state[j.id], kind=j.kind, workdir=j.workdir, log=log_path(sweep_dir, j))
    status.save()
    todo = [j for j in jobs if state[j.id] == "pending"]
    total, finished_before = len(jobs), len(jobs) - len(todo)
    log(f"sweep: {total} jobs, {finished_before} already finished, {len(todo)} to run on {len(slots)} slot(s)")
    free = list(range(len(slots)))
    running: list[Running] = []
    started = 0
    durations: list[float] = []
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        while True:
            for r in list(running):  # reap
                codes = [h.poll() for h in r.handles]
                if any(c is None for c in codes) and not any(c not in (None, 0) for c in codes):
                    continue
                if any(c is None for c in codes):  # one process of a multi-process job failed: stop the rest
                    for h in r.handles:
                        if h.poll() is None:
                            h.terminate()
                    codes = [_wait(h) for h in r.handles]
                running.remove(r)
                free.extend(r.slots)
                rc = next((c for c in codes if c), 0)
                secs = time.time() - r.start
                ok = rc == 0 and r.job.done()
                state[r.job.id] = "done" if ok else "failed"
                status.set(r.job.id, state=state[r.job.id], rc=rc, seconds=round(secs, 1))
                durations.append(secs)
                n_done = sum(s == "done" for s in state.values())
                eta = _eta(durations, sum(s == "pending" for s in state.values()) + len(running), len(slots))
                log(f"[{n_done}/{total}] {'done' if ok else 'FAILED'} {r.job.id} ({secs:.0f} s){eta}"
                    + ("" if ok else f" rc={rc}: see {log_path(sweep_dir, r.job)}"))
                if ok and on_done:
                    on_done(r.job)
                status.save()
            for j in todo:  # block dependents of failures
                if state[j.id] == "pending" and any(state[d] in ("failed", "blocked") for d in j.deps if d in state):
                    state[j.id] = "blocked"
                    status.set(j.id, state="blocked")
            ready = [j for j in todo if state[j.id] == "pending"
                     and all(state.get(d, "done" if by_id.get(d) is None else "") == "done" for d in j.deps)]
            limit_hit = max_jobs and started >= max_jobs
            for j in ready:
                if limit_hit:
                    break
                need = min(j.processes, len(slots)) if j.processes > 1 else 1
                if j.processes > 1 and len(free) < len(slots):
                    break  # a multi-process job takes the whole machine: wait for it to drain
                if len(free) < need:
                    break
                take = [free.pop(0) for _ in range(need)]
                coord = f"127.0.0.1:{free_port()}" if j.processes > 1 else ""
                handles = []
                for pid in range(j.processes):
                    env = dict(slots[take[pid % len(take)]])
                    if j.processes > 1:
                        env.update(PROCESS_ID=str(pid), COORDINATOR=coord)
                    handles.append(launcher(j, pid, coord, env, log_path(sweep_dir, j, pid)))
                state[j.id] = "running"
                status.set(j.id, state="running", attempts=int(status.rows[j.id].get("attempts", 0)) + 1)
                status.save()
                running.append(Running(j, handles, take, time.time()))
                started += 1
                log(f"start {j.id}" + (f" ({j.processes} processes)" if j.processes > 1 else "")
                    + (f" [{slots[take[0]]}]" if slots[take[0]] else ""))
                limit_hit = max_jobs and started >= max_jobs
            if not running:
                break
            time.sleep(poll_s)
    except BaseException:  # Ctrl-C, SIGTERM, or a crash here: never leave orphaned jobs behind
        for r in running:
            for h in r.handles:
                if h.poll() is None:
                    h.terminate()
            for h in r.handles:
                _wait(h)
            state[r.job.id] = "interrupted"
            status.set(r.job.id, state="interrupted")
        status.save()
        _safe_log(log, f"sweep interrupted; {sum(s == 'done' for s in state.values())}/{total} jobs finished "
            "(rerun the same command to continue)")
        raise
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    status.save()
    counts: dict[str, int] = {}
    for s in state.values():
        counts[s] = counts.get(s, 0) + 1
    return counts


def _safe_log(log: Callable[[str], None], msg: str) -> None:
    try:
        log(msg)
    except Exception:  # e.g. stdout is a closed pipe
        pass


def _wait(h: Handle, timeout: float = 30.0) -> int:
    wait = getattr(h, "wait", None)
    if wait is None:
        return h.poll() or 0
    try:
        return wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        getattr(h, "kill", lambda: None)()
        return wait()


def _eta(durations: list[float], left: int, slots: int) -> str:
    if not durations or not left:
        return ""
    secs = sum(durations) / len(durations) * left / max(1, slots)
    return f", ~{secs / 60:.0f} min left" if secs >= 60 else f", ~{secs:.0f} s left"


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()
