"""The pretrained encoder as evaluation reads it: ``<workdir>/encoder/`` + ``encoder.json``.

Written at the end of pretraining (and by fine-tuning), read by probe / fine-tune / kNN /
predict. ``encoder.json`` holds what is needed to rebuild the backbone and its input
normalisation, so evaluation needs no SSL config.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

META = "encoder.json"


def save_encoder(path: str, variables: dict[str, Any], model_cfg: ml_collections.ConfigDict,
                 meta: dict[str, Any]) -> None:
    path = os.path.abspath(path)
    variables = jax.device_get(variables)
    if jax.process_index() == 0:
        os.makedirs(path, exist_ok=True)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(path, "variables"), variables, force=True)
    ckptr.wait_until_finished()
    if jax.process_index() == 0:
        with open(os.path.join(path, META), "w") as f:
            json.dump(dict(meta, model=model_cfg.to_dict()), f, indent=1, sort_keys=True, default=str)


def resolve(path: str) -> str:
    """A pretraining/fine-tuning workdir or the encoder directory itself -> the encoder directory."""
    for cand in (path, os.path.join(path, "encoder")):
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
