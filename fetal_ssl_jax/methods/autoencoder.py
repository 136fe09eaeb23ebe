"""AutoEncoder: ResNet encoder -> pooled vector -> convolutional decoder -> the input image.

The loss is the MSE between the decoder output and the (augmented, normalised) input
``view1``; only one view is needed, so the second view the pipeline makes is dead code
that XLA removes. The encoder is the shared ResNet under ``params['backbone']``, so
``encoder_variables`` (from the base class) exports it in the ResNet layout.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fetal_ssl_jax import losses, monitors
from fetal_ssl_jax.methods.base import LossOutput, Method
from fetal_ssl_jax.models.decoder import Decoder


def decoder_seed_size(out_size: int, minimum: int = 4) -> int:
    """Smallest seed map >= ``minimum`` with out_size = seed * 2**k (112 px -> 7, 256 px -> 4).

    Any image size works this way, and no decoder stage is below 4x4 (XLA:CPU's slow conv path).
    """
    seed = int(out_size)
    while seed % 2 == 0 and seed // 2 >= minimum:
        seed //= 2
    return seed


class EncoderDecoder(nn.Module):
    """Returns pooled features ``h`` and the reconstruction ``x_hat`` [B, H, W, C]."""

    backbone: nn.Module
    decoder: nn.Module

    def __call__(self, x, train: bool = True):
        h = self.backbone(x, train=train)
        return {"h": h, "x_hat": self.decoder(h, train=train)}


class AutoEncoder(Method):
    name = "autoencoder"
    views = ("view1",)

    def network(self) -> nn.Module:
        dtype = self.backbone().dtype
        size = int(self.cfg.data.image_size)
        decoder = Decoder(out_size=size, out_channels=1, seed_size=decoder_seed_size(size),
                          width=int(self.mcfg.decoder_width), max_width=int(self.mcfg.get("decoder_max_width", 512)),
                          dtype=dtype, ops=self.ops)
        return EncoderDecoder(self.backbone(), decoder)

    def corrupt(self, x: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """The encoder's input and the corrupted-pixel mask (None: nothing corrupted, as here)."""
        return x, None

    def loss(self, params, batch_stats, extra, inputs, rng, step) -> LossOutput:
        x = inputs["view1"]
        x_in, erased = self.corrupt(x, rng)
        out, batch_stats = self.apply(params, batch_stats, x_in)
        target = x.astype(jnp.float32)
        mse_all = losses.reconstruction_loss(target, out["x_hat"])
        h = out["h"].astype(jnp.float32)
        metrics = {"mse_all": mse_all, "feature_std": monitors.embedding_std(h)}
        loss = mse_all
        if erased is not None:
            mse_erased = losses.reconstruction_loss(target, out["x_hat"], erased)
            metrics.update(mse_erased=mse_erased, erased_fraction=jnp.mean(erased.astype(jnp.float32)))
            if self.mcfg.get("loss_region", "all") == "erased":
                loss = mse_erased
        return LossOutput(loss, metrics, batch_stats, extra, rank_input=h, feature_input=h)
