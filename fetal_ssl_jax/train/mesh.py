"""Device mesh and shardings: the batch is split over 'data', the train state replicated.

Also the multi-process start: ``jax.distributed.initialize()`` when the launch
environment (SLURM, TPU pod, or explicit coordinator flags) says there are several.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA = "data"


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> bool:
    """Starts jax.distributed when asked to or when SLURM/TPU-pod variables say so; idempotent."""
    if getattr(maybe_initialize_distributed, "_done", False):
        return True
    explicit = bool(coordinator) and num_processes > 1
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ
    tpu = "TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if not (explicit or slurm or tpu):
        return False
    if explicit:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()
    maybe_initialize_distributed._done = True
    return True


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
    """1-D mesh over all devices (or the first ``num_devices``, for tests)."""
    devices = jax.devices()[:num_devices] if num_devices else jax.devices()
    return jax.make_mesh((len(devices),), (DATA,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def under_mesh(fn, mesh):
    """``fn`` traced with ``mesh`` as the context mesh, so that per-shard kernels (the oneDNN
    CPU convolution) can split the batch over 'data' with ``shard_map``; jit the result."""
    abstract = mesh.abstract_mesh

    def wrapped(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(abstract):
            return fn(*args, **kwargs)
    return wrapped


def to_global(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Process-local numpy batch -> global arrays sharded over 'data' (leading axis)."""
    sh = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sh, np.asarray(v)) for k, v in batch.items()}


def check_batch(global_batch: int) -> None:
    n, p = jax.device_count(), jax.process_count()
    if global_batch % n:
        raise ValueError(f"train.batch_size={global_batch} is not divisible by the {n} devices")
    if global_batch % p:
        raise ValueError(f"train.batch_size={global_batch} is not divisible by the {p} processes")


def replicate_tree(tree: Any, mesh) -> Any:
    return jax.device_put(tree, replicated(mesh))
