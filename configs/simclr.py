"""SimCLR-v2 (Chen et al. 2020): NT-Xent over the global batch, 3-layer BN projector."""
from configs import common


def get_config(variant: str = ""):
    c = common.pretrain_base()
    c.method = "simclr"
    c.simclr = dict(proj_dims=(2048, 2048, 128), temperature=0.1)
    c.optim.update(name="lars", base_lr=0.3, weight_decay=1e-6)
    c = common.apply_variant(c, variant)
    if variant == "cpu":
        c.simclr.proj_dims = (512, 512, 128)
    elif variant == "tiny":
        c.simclr.proj_dims = (64, 64, 32)
    return c
