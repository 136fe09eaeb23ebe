"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms."""
from configs import common


def get_config(variant: str = ""):
    c = common.pretrain_base()
    c.method = "vicreg"
    c.vicreg = dict(proj_dims=(8192, 8192, 8192), sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    c.optim.update(name="lars", base_lr=0.2, weight_decay=1e-6)
    c = common.apply_variant(c, variant)
    if variant == "cpu":
        c.vicreg.proj_dims = (1024, 1024, 1024)
    elif variant == "tiny":
        c.vicreg.proj_dims = (64, 64, 64)
    return c
