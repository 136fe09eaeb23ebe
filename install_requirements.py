#!/usr/bin/env python3
"""Installs pinned requirement files into a virtual environment: with uv where it can, otherwise with pip.

    python3 install_requirements.py .venv/bin/python -r requirements.txt -r requirements-cpu-fast.txt

The Makefile calls it for every environment it builds (`make demo`, `make test`, `make venv PLATFORM=...`,
which the emitted cloud jobs run). Why: on a fresh clone pip spent ~40 s of `make test` before the first test
(2-core AMD EPYC, warm pip cache; more on a slower CPU or a cold cache); uv installs the same pinned wheels in
~5 s (parallel downloads, no up-front bytecode compilation). The versions are the same either way: every
requirement file is fully pinned (tests/test_requirements.py).

pip's own settings still apply. The index (or no index), extra indexes, find-links, constraint files, trusted
hosts and CA bundle set for pip (pip.conf or PIP_* variables, as ``pip config list`` shows them) are passed on
to uv, so a mirror or an offline wheelhouse set up for pip (a hospital's package proxy) serves uv too, and
where a package is on several indexes the best version wins, as with pip. A location pip would skip (a missing
folder or file:// index) is skipped. Whatever uv cannot do (no
uv wheel for the platform, a proxy or index it rejects) falls back to pip, with a line saying so.
``FETAL_SSL_JAX_INSTALLER=pip`` uses pip alone.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

UV = "uv==0.13.9"
_LIST_KEYS = {"extra-index-url": "--extra-index-url", "find-links": "--find-links", "constraint": "--constraint",
              "trusted-host": "--allow-insecure-host"}
_TRUE = ("1", "true", "yes", "on")


def pip_settings(python: str) -> dict[str, list[str]]:
    """pip's effective index-url, no-index, extra-index-url, find-links, constraint, trusted-host and cert (files,
    then PIP_* variables)."""
    try:
        out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    settings: dict[str, list[str]] = {}
    rank = {"global": 0, "install": 1, ":env:": 2}  # pip's precedence: [global] < [install] < PIP_* variables
    lines = [line.partition("=") for line in out.splitlines()]
    for key, sep, value in sorted(lines, key=lambda kv: rank.get(kv[0].rsplit(".", 1)[0], 0)):
        name = key.rsplit(".", 1)[-1]
        if sep and name in ("index-url", "no-index", "cert", *_LIST_KEYS):
            settings[name] = shlex.split(value.strip().strip("'\""))
    return settings


def _reachable(location: str) -> bool:
    """A local index, folder or file that exists, or a remote URL (pip skips a missing local one)."""
    if location.startswith("file://"):
        return os.path.exists(location[len("file://"):])
    return "://" in location or os.path.exists(location)


def uv_args(settings: dict[str, list[str]]) -> list[str]:
    """uv pip install options equivalent to pip's settings."""
    args = ["--index-strategy", "unsafe-best-match"]  # pip's rule: the best version over all indexes
    if settings.get("no-index", ["0"])[0].lower() in _TRUE:  # an offline wheelhouse (find-links) only
        args.append("--no-index")
    for url in settings.get("index-url", [])[:1]:
        args += ["--index-url", url]
    for name, flag in _LIST_KEYS.items():
        for location in settings.get(name, []):
            if name == "trusted-host" or _reachable(location):
                args += [flag, location]
    return args


def _run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    return subprocess.run(cmd, env=env).returncode


def install(python: str, requirements: list[str]) -> str:
    """Installs ``requirements`` (pip install arguments) into ``python``'s environment; returns the tool used."""
    if os.environ.get("FETAL_SSL_JAX_INSTALLER", "uv") != "pip":
        settings = pip_settings(python)
        env = dict(os.environ)
        certs = [c for c in settings.get("cert", []) if os.path.exists(c)]
        if certs and "SSL_CERT_FILE" not in env:
            env["SSL_CERT_FILE"] = certs[0]
        rc = _run([python, "-m", "pip", "install", "-q", UV])
        if rc == 0:
            rc = _run([python, "-m", "uv", "pip", "install", "-q", "--python", python, *uv_args(settings),
                       *requirements], env)
        if rc == 0:
            return "uv"
        print(f"install_requirements: uv failed (exit {rc}); installing with pip instead", file=sys.stderr)
    if _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"]) != 0 or \
            _run([python, "-m", "pip", "install", "-q", *requirements]) != 0:
        raise SystemExit(f"install_requirements: pip could not install {' '.join(requirements)}")
    return "pip"


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    t0 = time.time()
    tool = install(argv[0], argv[1:])
    print(f"install_requirements: {' '.join(a for a in argv[1:] if a != '-r')} installed with {tool} "
          f"in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
