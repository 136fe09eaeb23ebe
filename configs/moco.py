"""MoCo-v2 (Chen et al. 2020): queue of momentum keys, MLP head without BN, temperature 0.2.

``shuffle_bn_group``: BN statistics per group of that many samples with the key batch
shuffled between groups (the countermeasure against BN cheating; 0 = global BN).
``momentum_schedule``: 'constant' (m = momentum) or 'cosine' (momentum -> 1 per step).
Recipe of the reference (facebookresearch/moco, v2): SGD 0.03 per 256, weight decay 1e-4, cosine,
no warmup, 800 epochs (200 in its ablations).
"""
from configs import common


def get_config(variant: str = ""):
    c = common.pretrain_base()
    c.method = "moco"
    c.moco = dict(proj_dims=(2048, 128), temperature=0.2, queue_size=65536, momentum=0.999,
                  momentum_schedule="constant", shuffle_bn_group=32, symmetric=False)
    c.optim.update(name="sgd", base_lr=0.03, weight_decay=1e-4, momentum=0.9)
    if variant in ("", "full"):
        common.paper_schedule(c, epochs=800, warmup_epochs=0)
        c.optim.warmup_steps = 0
    c = common.apply_variant(c, variant)
    if variant == "cpu":
        c.moco.update(proj_dims=(512, 128), queue_size=4096, momentum=0.99, shuffle_bn_group=16)
    elif variant == "tiny":
        c.moco.update(proj_dims=(64, 32), queue_size=64, momentum=0.99, shuffle_bn_group=4)
    return c
