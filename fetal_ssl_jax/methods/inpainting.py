"""Inpainting (context encoder style): erase rectangles from the input, reconstruct the image.

Random erasing runs on device inside the jitted step, from the loss rng: per sample a
count in ``num_rects`` (inclusive range), each rectangle with an area fraction from
``area`` and an aspect ratio (h/w, log-uniform) from ``aspect``, placed uniformly inside
the image, filled with ``fill`` ('zero' = the normalised mean, or 'noise' = N(0, 1)).
The loss is over the whole image by default, as the paper's code; ``loss_region =
'erased'`` restricts it to the erased pixels.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fetal_ssl_jax.methods.autoencoder import AutoEncoder


def erase_mask(rng: jax.Array, batch: int, height: int, width: int, num_rects: tuple[int, int],
               area: tuple[float, float], aspect: tuple[float, float]) -> jax.Array:
    """Boolean [B, H, W, 1], true inside the union of each sample's rectangles."""
    lo_n, hi_n = int(num_rects[0]), int(num_rects[1])
    k_n, k_a, k_r, k_y, k_x = jax.random.split(rng, 5)
    count = jax.random.randint(k_n, (batch, 1), lo_n, hi_n + 1)
    frac = jax.random.uniform(k_a, (batch, hi_n), minval=area[0], maxval=area[1])
    log_r = jax.random.uniform(k_r, (batch, hi_n), minval=jnp.log(aspect[0]), maxval=jnp.log(aspect[1]))
    r = jnp.exp(log_r)
    a = frac * height * width
    h = jnp.clip(jnp.round(jnp.sqrt(a * r)), 1, height).astype(jnp.int32)
    w = jnp.clip(jnp.round(jnp.sqrt(a / r)), 1, width).astype(jnp.int32)
    top = jnp.floor(jax.random.uniform(k_y, (batch, hi_n)) * (height - h + 1)).astype(jnp.int32)
    left = jnp.floor(jax.random.uniform(k_x, (batch, hi_n)) * (width - w + 1)).astype(jnp.int32)
    active = jnp.arange(hi_n)[None, :] < count                                  # [B, R]
    ys = jnp.arange(height)[None, None, :]
    xs = jnp.arange(width)[None, None, :]
    in_y = (ys >= top[..., None]) & (ys < (top + h)[..., None])                 # [B, R, H]
    in_x = (xs >= left[..., None]) & (xs < (left + w)[..., None])               # [B, R, W]
    rect = in_y[..., :, None] & in_x[..., None, :] & active[..., None, None]    # [B, R, H, W]
    return jnp.any(rect, axis=1)[..., None]


class Inpainting(AutoEncoder):
    name = "inpainting"

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.mcfg.get("loss_region", "all") not in ("all", "erased"):
            raise ValueError(f"inpainting.loss_region must be 'all' or 'erased', got {self.mcfg.loss_region!r}")
        if self.mcfg.fill not in ("zero", "noise"):
            raise ValueError(f"inpainting.fill must be 'zero' or 'noise', got {self.mcfg.fill!r}")
        lo, hi = self.mcfg.num_rects
        if not 0 <= int(lo) <= int(hi) or int(hi) < 1:
            raise ValueError(f"inpainting.num_rects must be (min, max) with 0 <= min <= max, max >= 1; got {(lo, hi)}")

    def corrupt(self, x: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Erased input and the erased-pixel mask, drawn on device from the step's loss key."""
        m = self.mcfg
        k_mask, k_fill = jax.random.split(rng)
        mask = erase_mask(k_mask, x.shape[0], x.shape[1], x.shape[2], tuple(m.num_rects), tuple(m.area),
                          tuple(m.aspect))
        fill = jax.random.normal(k_fill, x.shape, x.dtype) if m.fill == "noise" else jnp.zeros_like(x)
        return jnp.where(mask, fill, x), mask
