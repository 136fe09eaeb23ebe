"""orbax checkpoints of (train state, grain iterator state, config JSON).

A checkpoint is written to a temporary directory and renamed when complete (orbax's
atomicity), so a run killed mid-write restores the previous complete one. Restores use
abstract shardings, so nothing is initialised twice. A save that fails for lack of space
(or any other storage error, also one surfacing later from an async save) raises
``WriteFailed`` naming the checkpoint and the last complete one, which stays restorable.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.metadata import array_metadata_store  # orbax's own default handler's store
from orbax.checkpoint._src.serialization import type_handler_registry

from fetal_ssl_jax.errors import WriteFailed, is_write_error, reason

# Replica-parallel saving (orbax's default) cuts every replicated array into one slice per device, one
# dispatched slice op each: a tiny ResNet-18 train state on 4 devices took ~900 slice ops per save, ~1.4 s a
# save (cProfile of tests/test_evaluate_finetune.py on a busy 2-core AMD EPYC: 4 saves, 3,596 slice ops, 5.6 s),
# and in a fresh process each slice shape is first compiled, for arrays of a few KB whose transfer costs
# nothing. Arrays under 1 MiB per replica are written whole by one replica; bigger ones (a ResNet-50's large
# kernels and their optimizer moments) are still written in parallel. The same handler otherwise as orbax
# registers (its array metadata store). orbax's StandardSave has no per-manager handler registry, hence the
# process-wide registration when this module is imported.
MIN_BYTES_PER_REPLICA_SLICE = 1 << 20
type_handler_registry.GLOBAL_TYPE_HANDLER_REGISTRY.add(  # orbax's public register_type_handler logs a warning
    jax.Array, ocp.type_handlers.ArrayHandler(array_metadata_store=array_metadata_store.Store(),
                                              min_slice_bytes_for_replica_parallel=MIN_BYTES_PER_REPLICA_SLICE),
    override=True, ignore_warnings=True)


class Checkpointer:
    def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                               create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "config"))
        self._pending: int | None = None  # step of a save not yet known to be complete (async)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: Any | None, config: dict) -> None:
        items = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        try:
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as e:
            if is_write_error(e):  # may also be an earlier async save failing now
                raise self._write_failed(self._pending if self._pending is not None else step, e) from e
            raise
        self._pending = step

    def restore(self, step: int, abstract_state: Any, data_iter: Any | None = None) -> Any:
        items = dict(state=ocp.args.StandardRestore(abstract_state))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return out["state"]

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            if is_write_error(e):
                raise self._write_failed(self._pending, e) from e
            raise
        self._pending = None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            try:
                self.manager.close()
            except Exception:  # the error (if any) was reported by wait()
                pass

    def complete_steps(self) -> list[int]:
        """Steps with a finalised checkpoint on disk (a half-written one is a '*.orbax-checkpoint-tmp*' dir)."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())

    def _write_failed(self, step: int | None, e: BaseException) -> WriteFailed:
        kept = [s for s in self.complete_steps() if s != step]
        what = f"checkpoint {step}" if step is not None else "a checkpoint"
        then = (f"the last complete checkpoint (step {kept[-1]}) is intact and a rerun of the same command "
                "resumes from it" if kept else "there is no earlier checkpoint; a rerun starts again")
        return WriteFailed(f"could not write {what} in {self.directory}: {reason(e)}; {then} once the problem "
                           f"is fixed (free space). [{type(e).__name__}: {str(e)[:300]}]")
