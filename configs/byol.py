"""BYOL (Grill et al. 2020): online predictor vs EMA target, tau 0.996 -> 1 (cosine per step).

Recipe of the reference (deepmind-research/byol): LARS 0.2 per 256, weight decay 1.5e-6 (off for biases
and BN), 1000 epochs with 10 warmup, cosine to 0.
"""
from configs import common


def get_config(variant: str = ""):
    c = common.pretrain_base()
    c.method = "byol"
    c.byol = dict(proj_dims=(4096, 256), pred_dims=(4096, 256), tau_base=0.996)
    c.optim.update(name="lars", base_lr=0.2, weight_decay=1.5e-6)
    if variant in ("", "full"):
        common.paper_schedule(c, epochs=1000, warmup_epochs=10)
    c = common.apply_variant(c, variant)
    if variant == "cpu":
        c.byol.update(proj_dims=(1024, 256), pred_dims=(1024, 256), tau_base=0.99)
    elif variant == "tiny":
        c.byol.update(proj_dims=(64, 32), pred_dims=(64, 32))
    return c
