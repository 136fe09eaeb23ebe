"""Collapse monitors for SSL embeddings, cheap enough to log from inside the jitted step.

- ``embedding_std``: std over the batch of l2-normalised embeddings, averaged over
  dimensions. Healthy embeddings spread over the sphere give ~1/sqrt(D); complete
  collapse gives 0 (Chen & He, SimSiam, 2021).
- ``rankme``: effective rank exp(H(p)) of the normalised singular values
  (Garrido et al., RankMe, 2023); dimensional collapse shows as a rank far below D.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fetal_ssl_jax.losses import upcast, l2_normalize

Array = jax.Array


def embedding_std(z: Array) -> Array:
    zn = l2_normalize(upcast(z))
    return jnp.mean(jnp.std(zn, axis=0))


def rankme(z: Array, eps: float = 1e-7) -> Array:
    s = jnp.linalg.svd(upcast(z), compute_uv=False)
    p = s / jnp.maximum(jnp.sum(s), 1e-12) + eps
    return jnp.exp(-jnp.sum(p * jnp.log(p)))
