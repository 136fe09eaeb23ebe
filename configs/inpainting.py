"""Inpainting: erase 1-3 random rectangles on device, reconstruct the image (MSE on all pixels).

``num_rects`` (min, max) inclusive; ``area`` fraction of the image per rectangle; ``aspect``
h/w range (log-uniform); ``fill`` 'zero' | 'noise'; ``loss_region`` 'all' | 'erased'.
"""
from configs import common


def get_config(variant: str = ""):
    c = common.pretrain_base()
    c.method = "inpainting"
    c.inpainting = dict(decoder_width=32, decoder_max_width=512, num_rects=(1, 3), area=(0.02, 0.2),
                        aspect=(0.3, 3.3), fill="zero", loss_region="all")
    c.aug.update(blur_prob=(0.0, 0.0), noise_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0))
    c.optim.update(name="adamw", base_lr=1e-3, weight_decay=1e-4)
    if variant in ("", "full"):  # no reference recipe (the paper gives none): 100 epochs, 1 warmup
        common.paper_schedule(c, epochs=100, warmup_epochs=1)
    c = common.apply_variant(c, variant)
    if variant == "cpu":
        c.inpainting.update(decoder_width=16, decoder_max_width=256)
    elif variant == "tiny":
        c.inpainting.update(decoder_width=8, decoder_max_width=32)
    return c
