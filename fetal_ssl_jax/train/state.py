"""The train state: every piece of mutable training data as one explicit pytree."""
from __future__ import annotations

from typing import Any

import jax
from flax import struct


@struct.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: optimizer steps taken
    params: Any              # online network parameters
    batch_stats: Any         # BatchNorm running statistics
    opt_state: Any           # optax state
    extra: Any               # method state: EMA target, key queue, ... ({} for most methods)
