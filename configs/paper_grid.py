"""The paper's grid (Benjamin et al. 2023): 7 SSL methods + random init (+ ImageNet) x {probe, fine-tune}
x {1, 10, 100}% labels x seeds, as independent jobs for ``launch.py sweep``.

    python launch.py sweep --grid configs/paper_grid.py[:cpu|:tiny] --workdir runs/paper \\
        [--config.frame_data.main.store=<frame store> --config.labelled_data.store=<labelled store>] \\
        [--config.imagenet_weights=resnet50.safetensors] [--config.seeds=(0,1,2,3,4)]

Variants: '' = paper scale (ResNet-50, 256 px; the simulator's 'paper' preset unless stores are given),
'cpu' = the whole comparison on 2 CPU cores (below), 'tiny' = seconds per job (tests).
Without stores the grid simulates its data (synth + prepare jobs in <workdir>/data).

'cpu': the 'demo' preset at 64 px, the demo's CPU recipe for every method (half-width ResNet-18, batch 64,
AdamW 4e-3: LARS at batch 64 barely moves the weights in a few hundred steps, configs/demo.py), equal
pretraining compute per method (CPU_STEPS), fine-tuning at 1 and 10 %, linear probe and kNN at 1, 10 and
100 % for every initialisation, 3 seeds; probe and kNN share one feature pass per encoder.
"""
import ml_collections

from configs import demo
from fetal_ssl_jax.experiments.grid import data_spec

# Equal pretraining compute: the FLOPs of 800 BarlowTwins steps for every method, from XLA's cost analysis of
# each method's step (`python benchmarks/method_flops.py --variant cpu --config.model.width=0.5
# --config.train.batch_size=64`; GFLOP/step: AE/inpainting 34.9 (decoder), BYOL 29.2 (target forward),
# VICReg 23.8, BarlowTwins 23.4, SimCLR 21.5, MoCo 14.4 (key view forward only)).
CPU_STEPS = dict(autoencoder=536, inpainting=536, simclr=871, moco=1299, byol=640, vicreg=786, barlowtwins=800)

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
        c.pretrain_overrides = tuple(o for o in demo.PRETRAIN_OVERRIDES if not o.startswith("--config.train.steps="))
        c.method_overrides = {m: (f"--config.train.steps={n}",) for m, n in CPU_STEPS.items()}
        c.eval_overrides = demo.EVAL_OVERRIDES
        c.protocols = ("finetune", "probe", "knn")
        c.protocol_overrides = dict(demo.PROTOCOL_OVERRIDES)
        c.protocol_fractions = {"finetune": (1.0, 10.0)}
        c.share_features = True
        c.monitor_every = 100  # kNN val F1 of the encoder while it trains (curves in the report)
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
