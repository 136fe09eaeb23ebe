"""Checkpoint writing: replicated arrays under 1 MiB per replica are written whole by one replica; bigger ones
are still cut over the replicas (orbax's replica-parallel saving); both restore exactly."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from orbax.checkpoint._src.serialization import replica_slices

from fetal_ssl_jax.train import mesh as mesh_lib
from fetal_ssl_jax.train.checkpointing import MIN_BYTES_PER_REPLICA_SLICE, Checkpointer


def test_small_arrays_saved_whole_big_ones_over_replicas(tmp_path, monkeypatch):
    mesh = mesh_lib.make_mesh(4)
    rep = mesh_lib.replicated(mesh)
    n_big = MIN_BYTES_PER_REPLICA_SLICE  # float32 elements: 4x the threshold in bytes, exactly it per replica
    state = {"small": jax.device_put(jnp.arange(1000, dtype=jnp.float32), rep),
             "big": jax.device_put(jnp.arange(n_big, dtype=jnp.float32).reshape(1024, -1), rep)}
    seen = {}
    orig = replica_slices.get_replica_slices

    def spy(arr, *a, **k):
        out = orig(arr, *a, **k)
        seen[arr.nbytes] = [s.slice_args is not None for s in out.replica_slices]
        return out
    monkeypatch.setattr(replica_slices, "get_replica_slices", spy)
    ck = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    ck.save(1, state, None, {"k": 1})
    ck.wait()
    assert seen[4000] == [False]                 # one replica, the whole array, no slice op
    assert seen[n_big * 4] == [True] * 4          # one quarter per replica
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), state)
    back = ck.restore(1, abstract)
    ck.close()
    for k in state:
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(state[k]))
    assert os.path.isdir(tmp_path / "ckpt" / "1")
