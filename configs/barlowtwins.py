"""BarlowTwins (Zbontar et al. 2021): redundancy reduction of the cross-correlation matrix.

Recipe of the reference (facebookresearch/barlowtwins main.py): LARS, LR 0.2 per 256 for weights and
0.0048 per 256 for biases and BN parameters (``bias_lr_factor`` = 0.0048 / 0.2), weight decay 1.5e-6 off
for those, 10 warmup epochs of 1000, cosine to 0.001 x the peak. lambda = 0.0051 was tuned for an
8192-wide projector; the off-diagonal sum has d(d-1) terms against d on the diagonal, so narrower
projectors would keep the same balance with lambda x 8192 / d (``scaled_lambda``: 0.0408 at 1024). The 'cpu'
variant keeps 0.0051: on the CPU grid (batch 64, 1024 wide, README) the scaled lambda made the run unstable
(loss 1.9k -> 3.1k -> 1.1k), its accumulated RankMe fell from 271 to 9 and kNN val F1 from 0.40 to 0.36 by
step 500, where 0.0051 went 230 -> 44 and 0.41 -> 0.48 (README, "Results: the paper's comparison").
"""
from configs import common


def get_config(variant: str = ""):
    c = common.pretrain_base()
    c.method = "barlowtwins"
    c.barlowtwins = dict(proj_dims=(8192, 8192, 8192), lambd=0.0051, scale_loss=1.0)
    c.optim.update(name="lars", base_lr=0.2, weight_decay=1.5e-6, bias_lr_factor=0.0048 / 0.2, end_lr_factor=0.001)
    if variant in ("", "full"):
        common.paper_schedule(c, epochs=1000, warmup_epochs=10)
    c = common.apply_variant(c, variant)
    if variant == "cpu":
        c.barlowtwins.proj_dims = (1024, 1024, 1024)  # lambda as the reference (see above)
    elif variant == "tiny":
        c.barlowtwins.proj_dims = (64, 64, 64)  # lambda as the reference: the tests' numbers, not a recipe
    return c


def scaled_lambda(dim: int, lambd: float = 0.0051, ref_dim: int = 8192) -> float:
    """lambda for a ``dim``-wide projector with the reference's off-/on-diagonal balance (0.0408 at 1024)."""
    return lambd * ref_dim / dim
