"""AutoEncoder: ResNet encoder + upsampling decoder, MSE on the normalised input image.

The target is the input itself, so the on-device augmentation is milder than for the
joint-embedding methods (no blur, speckle or solarisation; crops, flips and jitter stay).
"""
from configs import common


def get_config(variant: str = ""):
    c = common.pretrain_base()
    c.method = "autoencoder"
    c.autoencoder = dict(decoder_width=32, decoder_max_width=512)
    c.aug.update(blur_prob=(0.0, 0.0), noise_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0))
    c.optim.update(name="adamw", base_lr=1e-3, weight_decay=1e-4)
    if variant in ("", "full"):  # no reference recipe (the paper gives none): 100 epochs, 1 warmup
        common.paper_schedule(c, epochs=100, warmup_epochs=1)
    c = common.apply_variant(c, variant)
    if variant == "cpu":
        c.autoencoder.update(decoder_width=16, decoder_max_width=256)
    elif variant == "tiny":
        c.autoencoder.update(decoder_width=8, decoder_max_width=32)
    return c
