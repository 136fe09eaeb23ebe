"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms.

Recipe of the reference (facebookresearch/vicreg main_vicreg.py): LARS 0.2 per 256, weight decay 1e-6,
1000 epochs with 10 warmup, cosine to 0.001 x the peak. The coefficients stay as the reference at every
projector width: it divides the covariance term by d (losses.vicreg_loss does too) and keeps 25/25/1 in its
own projector-width ablation, unlike BarlowTwins' lambda, which is tuned to one width.
"""
from configs import common


def get_config(variant: str = ""):
    c = common.pretrain_base()
    c.method = "vicreg"
    c.vicreg = dict(proj_dims=(8192, 8192, 8192), sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    c.optim.update(name="lars", base_lr=0.2, weight_decay=1e-6, end_lr_factor=0.001)
    if variant in ("", "full"):
        common.paper_schedule(c, epochs=1000, warmup_epochs=10)
    c = common.apply_variant(c, variant)
    if variant == "cpu":
        c.vicreg.proj_dims = (1024, 1024, 1024)
    elif variant == "tiny":
        c.vicreg.proj_dims = (64, 64, 64)
    return c
