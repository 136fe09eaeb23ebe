"""The install sets stay in step: requirements-cuda.txt and requirements-tpu.txt pin the same packages as the
CPU set (requirements.txt), the same jax/jaxlib version, and nothing CPU-only (the oneDNN wheels)."""
from __future__ import annotations

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_ONLY = {"onednn-cpu-gomp", "onednn-devel-cpu-gomp"}
PLATFORM_WHEELS = {"jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
                   "jax-cuda13-pjrt", "libtpu"}


def _pins(name: str) -> dict[str, str]:
    """normalised name -> the rest of the line after the name (version, markers); extras dropped."""
    out = {}
    with open(os.path.join(ROOT, name)) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            m = re.match(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)", line)
            assert m, line
            out[m.group(1).lower().replace("_", "-")] = m.group(3).replace(" ", "")
    return out


@pytest.mark.parametrize("platform_file", ["requirements-cuda.txt", "requirements-tpu.txt"])
def test_accelerator_sets_match_the_cpu_set(platform_file):
    cpu, acc = _pins("requirements.txt"), _pins(platform_file)
    assert not CPU_ONLY & set(acc), f"{platform_file} installs CPU-only wheels"
    shared = {k: v for k, v in cpu.items() if k not in CPU_ONLY | PLATFORM_WHEELS}
    for name, pin in shared.items():
        assert acc.get(name) == pin, f"{platform_file}: {name} {acc.get(name)!r}, requirements.txt {pin!r}"
    extra = set(acc) - set(shared) - PLATFORM_WHEELS
    assert not extra, f"{platform_file} pins packages the CPU set does not: {sorted(extra)}"
    assert acc["jax"] == cpu["jax"] and acc["jaxlib"] == cpu["jaxlib"], "jax must be the CPU set's version"
    version = cpu["jax"].lstrip("=")
    for plugin in ("jax-cuda12-plugin", "jax-cuda12-pjrt"):
        if plugin in acc:
            assert acc[plugin].lstrip("=") == version, plugin


def test_cpu_only_wheels_live_in_the_optional_cpu_extra():
    """oneDNN is the CPU extra (model.ops 'cpu_fast'), not part of the set every platform shares."""
    assert set(_pins("requirements-cpu-fast.txt")) == CPU_ONLY
    assert not CPU_ONLY & set(_pins("requirements.txt"))
