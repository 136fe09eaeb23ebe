"""The failures the commands recognise, and the exit code each maps to: the floor of the package.

Every command answers the same way (``cli_errors.run_guarded`` for pretrain and probe|finetune|knn,
data_prep/cli.py for prepare): ``USAGE`` 2 bad input or config (or a busy workdir), ``NONFINITE`` 3
non-finite values, ``WRITE_FAILED`` 74 a failed write (disk full), ``PREEMPTED`` 75 preempted (rerun
to continue). Anything else is a bug and keeps its traceback. This module imports nothing of ours,
so any layer can raise these.

Recognising a write that failed for lack of space, whatever library raised it:
Python raises ``OSError(errno.ENOSPC)``; tensorstore (orbax checkpoints) raises
``ValueError("RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']")``;
array_record raises ``RuntimeError("write() failed: No space left on device; ...")``.
``WriteFailed`` is what our code raises instead: an ``OSError`` whose message says what
was being written, why it failed and what is still intact.
"""
from __future__ import annotations

import errno

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("no space left on device", "disk quota exceeded", "os_error_code='28'",
                  "os_error_code='122'")


USAGE, NONFINITE, WRITE_FAILED, PREEMPTED = 2, 3, 74, 75


class NonFiniteError(RuntimeError):
    """Raised when a step produced a non-finite loss or gradient; the state is the last good one."""


class Preempted(RuntimeError):
    """SIGTERM (or a pod-wide preemption notice) arrived: a checkpoint was saved; rerun to continue."""


class WorkdirBusy(RuntimeError):
    """Another live process holds the lock of a run directory or store (workdir_lock.WorkdirLock)."""


class BadSource(Exception):
    """An input file (video, DICOM, HDF5, image) that cannot be converted; the message is the reason shown to the user."""


class WriteFailed(OSError):
    """A store or checkpoint could not be written (disk full, quota, I/O error); the message says what is kept."""


def is_disk_full(exc: BaseException) -> bool:
    """True if ``exc`` (or an exception it was raised from) reports a full disk or an exceeded quota."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        if any(t in str(exc).lower() for t in _NO_SPACE_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_write_error(exc: BaseException) -> bool:
    """An error of the storage rather than of the program: disk full, or any OSError (permissions, I/O)."""
    return is_disk_full(exc) or isinstance(exc, OSError)


def reason(exc: BaseException) -> str:
    """Short cause for a message: 'no space left on device' or the OSError's text."""
    if is_disk_full(exc):
        return "no space left on device"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}"
