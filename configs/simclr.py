"""SimCLR-v2 (Chen et al. 2020): NT-Xent over the global batch, 3-layer BN projector.

Recipe of the reference (google-research/simclr, v2): LARS with square-root LR scaling (0.075 x sqrt(batch)),
weight decay 1e-4, temperature 0.1, 800 epochs with 10 warmup; BatchNorm over both views together (2N) and
the projector's last BN keeps its scale, not its shift (methods/simclr.py).
"""
from configs import common


def get_config(variant: str = ""):
    c = common.pretrain_base()
    c.method = "simclr"
    c.simclr = dict(proj_dims=(2048, 2048, 128), temperature=0.1)
    c.optim.update(name="lars", base_lr=0.075, lr_scaling="sqrt", weight_decay=1e-4)
    if variant in ("", "full"):
        common.paper_schedule(c, epochs=800, warmup_epochs=10)
    c = common.apply_variant(c, variant)
    if variant == "cpu":
        c.simclr.proj_dims = (512, 512, 128)
    elif variant == "tiny":
        c.simclr.proj_dims = (64, 64, 32)
    return c
