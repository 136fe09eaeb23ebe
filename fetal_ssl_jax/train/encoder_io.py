"""The pretrained encoder as evaluation reads it: ``<workdir>/encoder/`` + ``encoder.json``.

Written at the end of pretraining (and by fine-tuning), read by probe / fine-tune / kNN /
predict. ``encoder.json`` holds what is needed to rebuild the backbone and its input
normalisation, so evaluation needs no SSL config.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

META = "encoder.json"


def save_encoder(path: str, variables: dict[str, Any], model_cfg: ml_collections.ConfigDict,
                 meta: dict[str, Any]) -> None:
    """Writes ``<path>.tmp`` completely (``encoder.json`` last), then swaps it in for ``path``.

    Overwriting in place would delete the old variables before the new ones exist, so a kill
    there left a directory that no rerun could load; a kill during the swap is finished by
    ``recover`` (called by every reader).
    """
    path = os.path.abspath(path)
    tmp = path + ".tmp"
    variables = jax.device_get(variables)
    if jax.process_index() == 0:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(tmp, "variables"), variables, force=True)
    ckptr.wait_until_finished()
    if jax.process_index() == 0:
        with open(os.path.join(tmp, META + ".tmp"), "w") as f:
            json.dump(dict(meta, model=model_cfg.to_dict()), f, indent=1, sort_keys=True, default=str)
        os.replace(os.path.join(tmp, META + ".tmp"), os.path.join(tmp, META))
        old = path + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        if os.path.exists(path):
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)


def recover(path: str) -> None:
    """Finishes a swap that a killed ``save_encoder`` left half done (no ``path``, a complete sibling)."""
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, META)):
        return
    for cand in (path + ".tmp", path + ".old"):  # .tmp holds encoder.json only once complete
        if os.path.exists(os.path.join(cand, META)):
            if os.path.exists(path):
                shutil.rmtree(path)
            os.rename(cand, path)
            return


def resolve(path: str) -> str:
    """A pretraining/fine-tuning workdir or the encoder directory itself -> the encoder directory."""
    for cand in (path, os.path.join(path, "encoder")):
        recover(cand)
        if os.path.exists(os.path.join(cand, META)):
            return cand
    raise FileNotFoundError(f"{path}: no encoder found (expected {META} here or in {path}/encoder); "
                            "did pretraining finish?")


def load_encoder(path: str) -> tuple[ml_collections.ConfigDict, dict[str, Any], dict[str, Any]]:
    """(model config, {'params', 'batch_stats'} as numpy, meta)."""
    enc = resolve(path)
    with open(os.path.join(enc, META)) as f:
        meta = json.load(f)
    variables = ocp.StandardCheckpointer().restore(os.path.join(enc, "variables"))
    variables = jax.tree.map(np.asarray, variables)
    return ml_collections.ConfigDict(meta["model"]), variables, meta
