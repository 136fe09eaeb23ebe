"""Device mesh and shardings: the batch is split over 'data', the train state replicated.

Also the multi-process start: ``jax.distributed.initialize()`` when the launch
environment (SLURM, TPU pod, Kubernetes, SkyPilot, or explicit coordinator flags) says there are several.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA = "data"


COORDINATOR_PORT = 8476  # the port JAX's own cluster detection uses on TPU pods


def distributed_args(env: Mapping[str, str] | None = None, coordinator: str = "", num_processes: int = 0,
                     process_id: int = -1) -> dict[str, Any] | None:
    """The ``jax.distributed.initialize`` keyword arguments for this launch environment; None = one process.

    In order: explicit flags; our own variables (``FETAL_SSL_JAX_COORDINATOR`` + ``FETAL_SSL_JAX_NUM_PROCESSES``,
    process id from ``FETAL_SSL_JAX_PROCESS_ID`` or Kubernetes' ``JOB_COMPLETION_INDEX``: the emitted
    Kubernetes Indexed Job / JobSet manifests set them); ``FETAL_SSL_JAX_DISTRIBUTED=auto`` (set by the emitted
    ``gcloud ... tpu-vm ssh --worker=all`` lines and TPU SkyPilot tasks: {}, JAX finds the pod slice's workers
    from the TPU metadata server); SkyPilot (``SKYPILOT_NODE_IPS``, ``SKYPILOT_NODE_RANK``); then JAX's own
    detection ({}) for a multi-task SLURM allocation or a GKE TPU pod with several ``TPU_WORKER_HOSTNAMES``.
    """
    env = os.environ if env is None else env
    if coordinator and num_processes > 1:
        return dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    n = int(env.get("FETAL_SSL_JAX_NUM_PROCESSES", "0") or 0)
    if env.get("FETAL_SSL_JAX_COORDINATOR") and n > 1:
        pid = env.get("FETAL_SSL_JAX_PROCESS_ID", "") or env.get("JOB_COMPLETION_INDEX", "")
        if pid == "":
            raise RuntimeError("FETAL_SSL_JAX_COORDINATOR is set but neither FETAL_SSL_JAX_PROCESS_ID nor "
                               "JOB_COMPLETION_INDEX says which process this is")
        return dict(coordinator_address=_with_port(env["FETAL_SSL_JAX_COORDINATOR"]), num_processes=n,
                    process_id=int(pid))
    if env.get("FETAL_SSL_JAX_DISTRIBUTED", "") == "auto":  # before SkyPilot's: a TPU pod slice under SkyPilot
        return {}
    ips = [ip.strip() for ip in env.get("SKYPILOT_NODE_IPS", "").splitlines() if ip.strip()]
    if len(ips) > 1:
        return dict(coordinator_address=f"{ips[0]}:{COORDINATOR_PORT}", num_processes=len(ips),
                    process_id=int(env.get("SKYPILOT_NODE_RANK", "0")))
    slurm = int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env
    tpu = "," in env.get("TPU_WORKER_HOSTNAMES", "")
    if slurm or tpu:
        return {}
    return None


def _with_port(address: str) -> str:
    return address if ":" in address.rsplit("]", 1)[-1] else f"{address}:{COORDINATOR_PORT}"


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> bool:
    """Starts jax.distributed when asked to or when the environment says so (see distributed_args); idempotent."""
    if getattr(maybe_initialize_distributed, "_done", False):
        return True
    kwargs = distributed_args(os.environ, coordinator, num_processes, process_id)
    if kwargs is None:
        return False
    jax.distributed.initialize(**kwargs)
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
