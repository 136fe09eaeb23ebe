"""XLA_FLAGS for test processes: a fake CPU device count on top of whatever flags the caller set."""
from __future__ import annotations

import re

_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=\d+")


def xla_flags_with_devices(n: int, flags: str = "") -> str:
    """``flags`` with its device count replaced by ``n``; other flags (e.g. ``--xla_cpu_max_isa``) kept."""
    rest = _DEVICE_COUNT.sub("", flags).split()
    return " ".join([*rest, f"--xla_force_host_platform_device_count={n}"])
