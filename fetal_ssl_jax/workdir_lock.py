"""One writer per run directory or store: an flock'ed lock file that names its holder.

The kernel drops an flock when its process dies, so a lock left by a killed run is
taken over without any staleness heuristics; the PID and host written into the file
make the refusal message useful ("in use by pid 1234 on host-a since ...").
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import IO

from fetal_ssl_jax.errors import WorkdirBusy


class WorkdirLock:
    def __init__(self, directory: str, what: str = "run"):
        self.path = os.path.join(directory, ".lock")
        self.what = what
        self._f: IO[str] | None = None

    def acquire(self) -> "WorkdirLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "{}"
            f.close()
            try:
                h = json.loads(holder)
                who = f"pid {h.get('pid')} on {h.get('host')} since {h.get('since')}"
            except ValueError:
                who = "another process"
            raise WorkdirBusy(f"{os.path.dirname(self.path)} is in use by {who} ({self.what}); "
                              "wait for it or use another directory") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "what": self.what}))
        f.flush()
        self._f = f
        return self

    def release(self) -> None:
        if self._f is not None:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()
            self._f = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
