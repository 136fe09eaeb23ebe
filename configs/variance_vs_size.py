"""Variance vs size, properly posed: at a fixed number of pretraining videos x frames, the SSL gain over
random initialisation as a function of the number of distinct patients the videos come from.

    python launch.py sweep --grid configs/variance_vs_size.py[:paper|:tiny] --workdir runs/var_size
    python launch.py report --workdir runs/var_size

Frame set ``pNN`` is the same number of sweep videos (``--videos``, each ``frames`` long) spread evenly over NN
patients (``--video-patients NN``): p01 is one fetus filmed 32 times, p32 is 32 fetuses filmed once. The sets
are nested (patients 0..NN-1). Within a patient the videos share most of their set-up
(``--video-variability``, VIDEO_VARIABILITY below: fetal pose, sweep start/end/direction, scanner settings,
maternal wall, screen; see README "The synthetic fetal-echo dataset"), as sweeps of one exam do; only the
sweep's timing and jitter, fetal movements, cardiac phase and speckle are each video's own. Scanner style and
anatomy are always per patient. Every encoder (``barlowtwins@pNN``, and random init) is evaluated on one
labelled store: the stills of the largest set's export, whose patients are disjoint from every video patient.
Each set is one BarlowTwins pretraining; the 3 seeds are the probe's (label subset and head), not the
pretraining's.

Variants: '' = CPU scale (demo preset: 32 videos x 64 frames, 128 px rendered and 64 px trained; the demo's
recipe cut to PRETRAIN_STEPS steps; 4 sets x ~3 min pretraining + 30 probes, ~20 min on 2 cores),
'paper' = accelerator scale (575 videos x 300 frames), 'tiny' = tests.
"""
import ml_collections

from configs import demo
from fetal_ssl_jax.experiments.grid import data_spec

VIDEO_VARIABILITY = 0.25   # a patient's videos correlate 0.75 (normal scores) in pose and settings
PRETRAIN_STEPS = 400       # demo recipe: 800; ~0.38 s a step on 2 cores

# variant: (phantom preset, training size, config variant, videos, patient counts, extra synth args)
VARIANTS = {
    "": ("demo", 64, "cpu", 32, (1, 4, 16, 32), ()),  # 4 points: what 2 cores afford next to the paper grid
    "paper": ("paper", 256, "", 575, (1, 5, 23, 115, 575), ()),
    "tiny": ("tiny", 32, "tiny", 8, (1, 8), ("--images", "300", "--labelled-patients", "30")),
}


def frame_set_name(patients: int, largest: int) -> str:
    return f"p{patients:0{max(2, len(str(largest)))}d}"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variance_vs_size variant {variant!r} (expected '', 'paper' or 'tiny')")
    preset, size, cfg_variant, videos, counts, extra = VARIANTS[variant]
    c = ml_collections.ConfigDict()
    c.name = "variance_vs_size"
    c.methods = ("barlowtwins",)
    c.pretrain_config = "configs/{method}.py"
    c.pretrain_variant = c.eval_variant = cfg_variant
    c.pretrain_overrides = ()
    c.pretrain_processes = 1
    c.baselines = ("random",)
    c.imagenet_weights = ""
    c.protocols = ("probe",)
    c.eval_config = "configs/{protocol}.py"
    c.eval_overrides = ()
    c.fractions = (1.0, 10.0)
    c.seeds = (0, 1, 2)
    c.share_features = True  # one feature pass per encoder for all its probes
    largest = max(counts)

    def synth(n: int) -> tuple[str, ...]:
        stills = extra if n == largest else ("--images", "0")  # only the labelled store's export renders stills
        return ("--videos", str(videos), "--video-patients", str(n), "--video-variability", str(VIDEO_VARIABILITY),
                *stills)

    c.frame_data = ml_collections.ConfigDict({
        frame_set_name(n, largest): data_spec(synth_preset=preset, synth_args=synth(n), size=size, stride=1)
        for n in counts})
    c.labelled_data = data_spec(synth_preset=preset, synth_args=synth(largest), size=size)  # shares that export
    if variant == "":  # the demo's CPU recipe (AdamW, half-width ResNet-18), fewer steps
        c.pretrain_overrides = tuple(o for o in demo.PRETRAIN_OVERRIDES if not o.startswith("--config.train.steps="))
        c.pretrain_overrides += (f"--config.train.steps={PRETRAIN_STEPS}",)
        c.eval_overrides = demo.EVAL_OVERRIDES
        c.protocol_overrides = dict(demo.PROTOCOL_OVERRIDES)
    if variant == "tiny":
        c.fractions = (100.0,)
        c.seeds = (0,)
    return c
