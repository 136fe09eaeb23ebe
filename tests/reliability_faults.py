"""Fault injection for the reliability tests: ``python tests/reliability_faults.py FAULT launch-args...``.

Installs one fault (a SIGKILL, a SIGTERM or a full disk at a chosen point, by patching the
library function that runs there) and then runs ``launch.main``. FAULT is ``name[=arg]``:

    kill_ckpt_finalize=S   SIGKILL when checkpoint S is complete but not yet renamed into place
    kill_selected_overwrite SIGKILL while fine-tuning replaces its selected model (old one exists)
    kill_export            SIGKILL while the final encoder is being written
    sigterm_at=S           SIGTERM to itself right after step S is logged (a preemption notice)
    enospc_ckpt=S          the write of checkpoint S fails for lack of space (tensorstore's error)
    kill_record=SPLIT:N    SIGKILL at the N-th record written to SPLIT's file (prepare images)
    kill_index=NAME        SIGKILL when the index file NAME is about to be written (prepare images)
    kill_commit            SIGKILL halfway through putting a staged labelled store in place
    val_bonus=S:B,...      fine-tuning's validation macro-F1 at step S is shifted by B before selection
                           (e.g. 16:-2,24:2: F1 lies in [0, 1], so step 16 is never selected, step 24 always replaces the
                           selection), so a test's precondition does not hang on float rounding

Several faults combine with '+': ``val_bonus=24:1+kill_selected_overwrite``.
"""
from __future__ import annotations

import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

NO_SPACE = ("RESOURCE_EXHAUSTED: Error writing local file \"{}\": Failed to write 54099 bytes to file 17: "
            "No space left on device [os_error_code='28']")


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _patch_finalize(match) -> None:
    from orbax.checkpoint._src.path import atomicity
    orig = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *a, **k):
        if match(str(self._final_path)):
            _die()
        return await orig(self, *a, **k)
    atomicity.AtomicRenameTemporaryPath.finalize = finalize


def install(faults: str) -> None:
    for fault in faults.split("+"):
        _install_one(fault)


def _install_one(fault: str) -> None:
    name, _, arg = fault.partition("=")
    if name == "none":
        return
    if name == "val_bonus":
        from fetal_ssl_jax.evaluate import finetune
        bonus = {int(k): float(v) for k, v in (kv.split(":") for kv in arg.split(","))}
        orig_update = finetune.Selection.update

        def update(self, step, f1, variables):
            return orig_update(self, step, f1 + bonus.get(int(step), 0.0), variables)
        finetune.Selection.update = update
    elif name == "kill_ckpt_finalize":
        _patch_finalize(lambda p: p.endswith(f"/checkpoints/{arg}"))
    elif name == "kill_selected_overwrite":
        _patch_finalize(lambda p: p.endswith("/variables") and "/selected" in p
                        and os.path.exists(os.path.join(p.split("/selected")[0], "selected", "encoder.json")))
    elif name == "kill_export":
        _patch_finalize(lambda p: p.endswith("/variables") and "/encoder" in p)
    elif name == "sigterm_at":
        from fetal_ssl_jax.train import logging_utils
        orig = logging_utils.RunLogger.log

        def log(self, step, *a, **k):
            row = orig(self, step, *a, **k)
            if step == int(arg):
                os.kill(os.getpid(), signal.SIGTERM)
            return row
        logging_utils.RunLogger.log = log
    elif name == "enospc_ckpt":
        import orbax.checkpoint as ocp
        orig = ocp.StandardCheckpointHandler.async_save

        async def async_save(self, directory, *a, **k):
            if f"/checkpoints/{arg}.orbax-checkpoint-tmp" in str(directory):
                raise ValueError(NO_SPACE.format(os.path.join(str(directory), "_sharding")))
            return await orig(self, directory, *a, **k)
        ocp.StandardCheckpointHandler.async_save = async_save
    elif name == "kill_record":
        from fetal_ssl_jax.data import records
        split, n = arg.split(":")
        orig = records.RecordWriter.write

        def write(self, rec):
            if os.path.basename(self.path).startswith(split + ".") and self.count + 1 == int(n):
                _die()
            return orig(self, rec)
        records.RecordWriter.write = write
    elif name == "kill_index":
        from fetal_ssl_jax.data import labelled_store
        orig = labelled_store._dump

        def dump(path, obj):
            if os.path.basename(path).startswith(arg):
                _die()
            return orig(path, obj)
        labelled_store._dump = dump
    elif name == "kill_commit":
        from fetal_ssl_jax.data import labelled_store
        real = os.replace

        class _Os:  # the module's os, with a replace that dies once the first split is in place
            def __getattr__(self, k):
                return getattr(os, k)

            @staticmethod
            def replace(src, dst):
                real(src, dst)
                if dst.endswith("train.array_record"):
                    _die()
        labelled_store.os = _Os()
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    import launch
    sys.exit(launch.main(sys.argv[2:]))
