"""The one-command demo (`launch.py demo`): simulate the 'demo' preset, prepare the stores, pretrain
BarlowTwins, then probe and fine-tune from BarlowTwins and from random init with 1% and 10% labels
over 3 seeds. Expressed as a sweep grid, so it resumes like any sweep.

Sizes (steps, epochs) are the knobs that keep it near 15 minutes on 2 CPU cores; override with
``--config.pretrain_overrides=(...)`` / ``--config.eval_overrides=(...)``.
"""
import ml_collections

from fetal_ssl_jax.experiments.grid import data_spec

# The CPU recipe (shared with configs/variance_vs_size.py).
# ResNet-18 at half width, torchvision stem, 64 px: ~0.38 s per BarlowTwins step on 2 cores.
# AdamW instead of BarlowTwins' LARS: LARS with trust 0.001 at batch 64 changes each weight by ~5e-5 of its
# norm per step, so in a few hundred steps the encoder barely leaves its initialisation (probe F1 = random's).
# The recipe replaces each method's optimizer whole: one LR for every parameter, scaled linearly with the batch,
# and a cosine to 0, whatever the method's reference does with LARS (BarlowTwins' bias LR 0.024x, the 0.001x end
# of BarlowTwins/VICReg, SimCLR's square-root scaling, which would give AdamW 32x the LR at batch 64).
PRETRAIN_OVERRIDES = ("--config.model.width=0.5", "--config.train.steps=800", "--config.train.batch_size=64",
                      "--config.optim.name=adamw", "--config.optim.base_lr=4e-3", "--config.optim.weight_decay=1e-4",
                      "--config.optim.lr_scaling=linear", "--config.optim.bias_lr_factor=1.0",
                      "--config.optim.end_lr_factor=0.0",
                      "--config.train.ckpt_every=200", "--config.train.log_every=20")
EVAL_OVERRIDES = ("--config.model.width=0.5",)  # random init gets the SSL encoder's architecture
# Cheaper fine-tunes than configs/finetune.py:cpu (30 epochs, >= 100 steps, 25 validations; ~48 s per run
# here): 10 epochs but at least 100 steps (1%: 35 images, 10%: 350 images -> 100 steps each), validated 10
# times. Not fewer steps: at 60 steps the BarlowTwins init lost its 1% fine-tune lead (40.8 vs 40.9 F1;
# 47.9 vs 41.6 at 100 steps, ahead on every seed).
PROTOCOL_OVERRIDES = {"finetune": ("--config.train.epochs=10", "--config.train.min_steps=100",
                                   "--config.train.max_evals=10")}


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "demo"
    c.methods = ("barlowtwins",)
    c.pretrain_config = "configs/{method}.py"
    c.pretrain_variant = "cpu"
    c.pretrain_overrides = PRETRAIN_OVERRIDES
    c.pretrain_processes = 1
    c.baselines = ("random",)
    c.imagenet_weights = ""
    c.protocols = ("probe", "finetune")
    c.eval_config = "configs/{protocol}.py"
    c.eval_variant = "cpu"
    c.eval_overrides = EVAL_OVERRIDES
    c.protocol_overrides = dict(PROTOCOL_OVERRIDES)
    c.fractions = (1.0, 10.0)
    c.seeds = (0, 1, 2)
    c.frame_data = ml_collections.ConfigDict(dict(main=data_spec(synth_preset="demo", size=64, stride=1)))
    c.labelled_data = data_spec(synth_preset="demo", size=64)
    if variant == "tiny":  # the same pipeline in about a minute (tests)
        synth = ("--images", "300", "--labelled-patients", "30")
        c.pretrain_variant = c.eval_variant = "tiny"
        c.pretrain_overrides = c.eval_overrides = ()
        c.protocol_overrides = {}
        c.seeds = (0,)
        c.frame_data.main = data_spec(synth_preset="tiny", synth_args=synth, size=32, stride=1)
        c.labelled_data = data_spec(synth_preset="tiny", synth_args=synth, size=32)
    elif variant:
        raise ValueError(f"unknown demo variant {variant!r} (expected '' or 'tiny')")
    return c
