"""How training and evaluation commands turn known failures into one stderr line and an exit code.

Shared by ``launch.py pretrain`` and ``probe|finetune|knn`` so every command answers the same
way; the failures and their codes are defined in errors.py (2 bad input or config or a busy
workdir, 3 non-finite values, 74 a failed write, 75 preempted). Anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence, TypeVar

import ml_collections

from fetal_ssl_jax import configuration
from fetal_ssl_jax.errors import NONFINITE, PREEMPTED, USAGE, WRITE_FAILED, NonFiniteError, Preempted, WorkdirBusy

T = TypeVar("T")


def fail(command: str, message: str, code: int = USAGE) -> int:
    print(f"launch.py {command}: {message}", file=sys.stderr)
    return code


def load_config(command: str, spec: str, overrides: Sequence[str],
                validate: Callable[[ml_collections.ConfigDict], None] | None = None
                ) -> ml_collections.ConfigDict | None:
    """The config, or None after printing why it is unusable (validate raises ValueError)."""
    try:
        cfg = configuration.load(spec, overrides)
        if validate is not None:
            validate(cfg)
        return cfg
    except (FileNotFoundError, KeyError, ValueError, AttributeError, SyntaxError) as e:
        fail(command, f"bad config: {configuration.error_text(e)}")
        return None


def run_guarded(command: str, body: Callable[[], T]) -> tuple[int | None, T | None]:
    """(None, result) or (exit code, None) after printing the failure in one line."""
    try:
        return None, body()
    except NonFiniteError as e:
        return fail(command, str(e), NONFINITE), None
    except Preempted as e:
        return fail(command, str(e), PREEMPTED), None
    except (FileNotFoundError, NotADirectoryError, FileExistsError, KeyError, ValueError, WorkdirBusy) as e:
        return fail(command, configuration.error_text(e)), None
    except OSError as e:  # disk full, permissions: the message says what was kept
        return fail(command, str(e), WRITE_FAILED), None
