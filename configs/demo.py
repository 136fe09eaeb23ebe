"""The one-command demo (`launch.py demo`): simulate the 'demo' preset, prepare the stores, pretrain
BarlowTwins, then probe and fine-tune from BarlowTwins and from random init with 1% and 10% labels
over 3 seeds. Expressed as a sweep grid, so it resumes like any sweep.

Sizes (steps, epochs) are the knobs that keep it near 15 minutes on 2 CPU cores; override with
``--config.pretrain_overrides=(...)`` / ``--config.eval_overrides=(...)``.
"""
import ml_collections

from fetal_ssl_jax.experiments.grid import data_spec


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "demo"
    c.methods = ("barlowtwins",)
    c.pretrain_config = "configs/{method}.py"
    c.pretrain_variant = "cpu"
    # ResNet-18 at half width, torchvision stem, 64 px: ~0.6 s per BarlowTwins step on 2 cores.
    c.pretrain_overrides = ("--config.model.width=0.5", "--config.train.steps=300", "--config.train.batch_size=64",
                            "--config.train.ckpt_every=100", "--config.train.log_every=10")
    c.pretrain_processes = 1
    c.baselines = ("random",)
    c.imagenet_weights = ""
    c.protocols = ("probe", "finetune")
    c.eval_config = "configs/{protocol}.py"
    c.eval_variant = "cpu"
    c.eval_overrides = ("--config.model.width=0.5",)  # random init gets the SSL encoder's architecture
    c.fractions = (1.0, 10.0)
    c.seeds = (0, 1, 2)
    c.frame_data = ml_collections.ConfigDict(dict(main=data_spec(synth_preset="demo", size=64, stride=1)))
    c.labelled_data = data_spec(synth_preset="demo", size=64)
    if variant == "tiny":  # the same pipeline in about a minute (tests)
        synth = ("--images", "300", "--labelled-patients", "30")
        c.pretrain_variant = c.eval_variant = "tiny"
        c.pretrain_overrides = c.eval_overrides = ()
        c.seeds = (0,)
        c.frame_data.main = data_spec(synth_preset="tiny", synth_args=synth, size=32, stride=1)
        c.labelled_data = data_spec(synth_preset="tiny", synth_args=synth, size=32)
    elif variant:
        raise ValueError(f"unknown demo variant {variant!r} (expected '' or 'tiny')")
    return c
