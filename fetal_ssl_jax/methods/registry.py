"""config.method -> method class. New methods register here with one line."""
from __future__ import annotations

import importlib

import ml_collections

from fetal_ssl_jax.methods.base import Method

_METHODS = {
    "barlowtwins": "fetal_ssl_jax.methods.barlowtwins:BarlowTwins",
    "vicreg": "fetal_ssl_jax.methods.vicreg:VICReg",
    "simclr": "fetal_ssl_jax.methods.simclr:SimCLR",
    "byol": "fetal_ssl_jax.methods.byol:BYOL",
    "moco": "fetal_ssl_jax.methods.moco:MoCo",
    "autoencoder": "fetal_ssl_jax.methods.autoencoder:AutoEncoder",
    "inpainting": "fetal_ssl_jax.methods.inpainting:Inpainting",
    "supervised": "fetal_ssl_jax.methods.supervised:Supervised",
}


def names() -> list[str]:
    return sorted(_METHODS)


def get_method(cfg: ml_collections.ConfigDict) -> Method:
    name = cfg.method
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(names())}")
    module, cls = _METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)
