"""Variance vs size (the paper's second claim): pretrain on many patients x one video each vs few
patients x many videos each, at an equal number of videos and frames, and evaluate both encoders.

    python launch.py sweep --grid configs/variance_vs_size.py[:paper|:tiny] --workdir runs/var_size

The phantom's ``design`` knob builds the two frame sets from the same preset: 'variance' gives
every video its own patient, 'size' packs ``size_factor`` videos into each patient. Both are
evaluated on the same labelled store (patients disjoint from all video patients). In the
report the encoders appear as ``<method>@variance`` and ``<method>@size``.
Variants: '' = CPU scale ('demo' preset: 32 videos of 64 frames; the demo's recipe, ResNet-18 at 64 px),
'paper' = accelerator scale, 'tiny' = tests.
"""
import ml_collections

from configs import demo
from fetal_ssl_jax.experiments.grid import data_spec


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "variance_vs_size"
    c.methods = ("barlowtwins",)
    c.pretrain_config = "configs/{method}.py"
    c.pretrain_overrides = ()
    c.pretrain_processes = 1
    c.baselines = ("random",)
    c.imagenet_weights = ""
    c.protocols = ("probe", "finetune")
    c.eval_config = "configs/{protocol}.py"
    c.eval_overrides = ()
    c.fractions = (1.0, 10.0)
    c.seeds = (0, 1, 2)
    presets = {"": ("demo", 64, "cpu", ()), "paper": ("paper", 256, "", ()),
               "tiny": ("tiny", 32, "tiny", ("--patients", "8", "--images", "300", "--labelled-patients", "30"))}
    if variant not in presets:
        raise ValueError(f"unknown variance_vs_size variant {variant!r} (expected '', 'paper' or 'tiny')")
    preset, size, cfg_variant, extra = presets[variant]
    c.pretrain_variant = c.eval_variant = cfg_variant
    factor = ("--size-factor", "4") if variant == "tiny" else ()
    c.frame_data = ml_collections.ConfigDict({
        design: data_spec(synth_preset=preset, synth_args=("--design", design, *factor, *extra), size=size, stride=1)
        for design in ("variance", "size")})
    c.labelled_data = data_spec(synth_preset=preset, synth_args=("--design", "variance", *factor, *extra), size=size)
    if variant == "":  # the demo's CPU recipe (AdamW, 800 steps, half-width ResNet-18)
        c.pretrain_overrides = demo.PRETRAIN_OVERRIDES
        c.eval_overrides = demo.EVAL_OVERRIDES
        c.protocol_overrides = dict(demo.PROTOCOL_OVERRIDES)
    if variant == "tiny":
        c.fractions = (100.0,)
        c.seeds = (0,)
        c.protocols = ("probe",)
    return c
