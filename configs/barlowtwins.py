"""BarlowTwins (Zbontar et al. 2021): redundancy reduction of the cross-correlation matrix."""
from configs import common


def get_config(variant: str = ""):
    c = common.pretrain_base()
    c.method = "barlowtwins"
    c.barlowtwins = dict(proj_dims=(8192, 8192, 8192), lambd=0.0051, scale_loss=1.0)
    c.optim.update(name="lars", base_lr=0.2, weight_decay=1.5e-6)
    c = common.apply_variant(c, variant)
    if variant == "cpu":
        c.barlowtwins.proj_dims = (1024, 1024, 1024)
    elif variant == "tiny":
        c.barlowtwins.proj_dims = (64, 64, 64)
    return c
