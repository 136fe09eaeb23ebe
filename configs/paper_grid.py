"""The paper's grid (Benjamin et al. 2023): 7 SSL methods + random init (+ ImageNet) x {probe, fine-tune}
x {1, 10, 100}% labels x seeds, as independent jobs for ``launch.py sweep``.

    python launch.py sweep --grid configs/paper_grid.py[:cpu|:tiny] --workdir runs/paper \\
        [--config.frame_data.main.store=<frame store> --config.labelled_data.store=<labelled store>] \\
        [--config.imagenet_weights=resnet50.safetensors] [--config.seeds=(0,1,2,3,4)]

Variants: '' = paper scale (ResNet-50, 256 px; the simulator's 'paper' preset unless stores are given),
'cpu' = ResNet-18 at 64 px on the 'demo' preset, 'tiny' = seconds per job (tests).
Without stores the grid simulates its data (synth + prepare jobs in <workdir>/data).
"""
import ml_collections

from fetal_ssl_jax.experiments.grid import data_spec

METHODS = ("autoencoder", "inpainting", "simclr", "moco", "byol", "vicreg", "barlowtwins")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "paper_grid"
    c.methods = METHODS
    c.pretrain_config = "configs/{method}.py"     # relative to the repository root, or absolute
    c.pretrain_variant = variant
    c.pretrain_overrides = ()                      # extra '--config.k=v' for every pretraining
    c.pretrain_processes = 1                       # > 1: multi-process (multi-host) pretraining jobs
    c.baselines = ("random",)
    c.imagenet_weights = ""                        # torchvision ResNet state dict: adds the ImageNet init
    c.protocols = ("probe", "finetune")
    c.eval_config = "configs/{protocol}.py"
    c.eval_variant = variant
    c.eval_overrides = ()
    c.fractions = (1.0, 10.0, 100.0)
    c.seeds = (0, 1, 2)
    if variant in ("", "full"):
        c.pretrain_variant = c.eval_variant = ""
        c.frame_data = ml_collections.ConfigDict(dict(main=data_spec(synth_preset="paper", size=256, stride=1)))
        c.labelled_data = data_spec(synth_preset="paper", size=256)
    elif variant == "cpu":
        c.frame_data = ml_collections.ConfigDict(dict(main=data_spec(synth_preset="demo", size=64, stride=1)))
        c.labelled_data = data_spec(synth_preset="demo", size=64)
    elif variant == "tiny":
        # enough labelled patients that val and test hold several each (as configs/probe.py:tiny simulates)
        synth = ("--images", "300", "--labelled-patients", "30")
        c.methods = ("simclr", "barlowtwins")
        c.fractions = (10.0, 100.0)
        c.seeds = (0, 1)
        c.frame_data = ml_collections.ConfigDict(dict(main=data_spec(synth_preset="tiny", synth_args=synth, size=32,
                                                                     stride=1)))
        c.labelled_data = data_spec(synth_preset="tiny", synth_args=synth, size=32)
    else:
        raise ValueError(f"unknown paper_grid variant {variant!r} (expected '', 'cpu' or 'tiny')")
    return c
