"""orbax checkpoints of (train state, grain iterator state, config JSON).

A checkpoint is written to a temporary directory and renamed when complete (orbax's
atomicity), so a run killed mid-write restores the previous complete one. Restores use
abstract shardings, so nothing is initialised twice.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                               create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "config"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: Any | None, config: dict) -> None:
        items = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state: Any, data_iter: Any | None = None) -> Any:
        items = dict(state=ocp.args.StandardRestore(abstract_state))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return out["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
