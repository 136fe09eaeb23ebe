"""Defaults shared by the evaluation configs (configs/probe.py, finetune.py, knn.py).

Variants: '' = the paper's scale (ResNet-50 at 256 px; an SSL encoder brings its own
architecture and input size), 'cpu' = ResNet-18 at 64 px, 'tiny' = seconds on CPU on the
simulator's tiny preset (no data path needed).
"""
from __future__ import annotations

import ml_collections

from fetal_ssl_jax import config_validation

PROTOCOLS = ("probe", "finetune", "knn")


def eval_base(protocol: str) -> ml_collections.ConfigDict:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    c = ml_collections.ConfigDict()
    c.protocol = protocol
    c.init = "random"          # random | <SSL workdir or encoder dir> | imagenet:<state dict path>
    c.fraction = 100.0         # label fraction in percent (a subset saved in the store)
    c.seed = 0                 # training seed, and the store's fraction seed unless fraction_seed >= 0
    c.fraction_seed = -1
    # Architecture for random / ImageNet init (an SSL encoder brings its own; ImageNet's depth/width
    # are read from the state dict).
    c.model = ml_collections.ConfigDict(dict(
        arch="resnet50", width=1.0, small_stem=False, zero_init_residual=False, dtype="float32",
        ops="auto"))  # which kernels run: fetal_ssl_jax/models/ops.py (kept when an SSL encoder brings its model)
    c.normalize = ml_collections.ConfigDict(dict(mean=0.5, std=0.25))  # random init's input normalisation
    # ImageNet weights: RGB stem folded to grayscale by 'sum' keeps the response to a gray image equal
    # to the RGB network's; inputs normalised with ImageNet's channel-averaged statistics.
    c.imagenet = ml_collections.ConfigDict(dict(reduce="sum", mean=0.449, std=0.226))
    c.data = ml_collections.ConfigDict(dict(
        store="",              # labelled store; '' = simulate one in the workdir (phantom preset below)
        synthetic_preset="tiny",
        synthetic_images=0,    # > 0 overrides the preset's number of labelled images
        synthetic_patients=0,  # > 0 overrides the preset's number of labelled patients
        image_size=0,          # 0 = the encoder's pretraining size (256 for random / ImageNet init)
        eval_batch_size=256,
        feature_cache="",      # probe/kNN: a folder of frozen features shared between runs ('' = in the workdir)
        workers=0, prefetch=2,
    ))
    c.train = ml_collections.ConfigDict(dict(progress=True))
    if protocol == "probe":
        c.probe = ml_collections.ConfigDict(dict(
            epochs=100, batch_size=256,   # batch_size 0 = full batch
            optimizer="adamw", lr=1e-3, weight_decay=1e-4,
            standardize=True,             # features scaled by train-subset mean/std (still a linear probe)
        ))
    elif protocol == "knn":
        c.knn = ml_collections.ConfigDict(dict(k=20, temperature=0.07))
    else:
        c.method = "supervised"
        c.data.update(crop_scale=(0.5, 1.0), crop_ratio=(0.75, 1.3333), hflip=True)
        # Milder than pretraining, grayscale only: no hue/saturation, no solarisation.
        c.aug = ml_collections.ConfigDict(dict(
            enabled=True, brightness=0.2, contrast=0.2, gamma=0.2, jitter_prob=0.8,
            blur_prob=(0.2, 0.2), blur_sigma=(0.1, 1.0),
            noise_prob=(0.3, 0.3), noise_std=0.1,
            solarize_prob=(0.0, 0.0),
            mean=0.5, std=0.25,   # replaced at run time by the initialisation's normalisation
        ))
        c.optim = ml_collections.ConfigDict(dict(
            name="adamw", base_lr=1e-3, lr_batch_scale=64, warmup_steps=0, warmup_frac=0.05,
            weight_decay=1e-4, momentum=0.9, trust_coefficient=0.001, b1=0.9, b2=0.999,
            end_lr_factor=0.0, grad_clip=0.0))
        c.train.update(steps=0, epochs=30,  # steps 0 = epochs * subset size / batch_size, at least min_steps
                       min_steps=100,  # 1% labels: 30 epochs of a dozen images would be a handful of steps
                       batch_size=64, eval_every=0,  # eval_every 0 = once per epoch (validation macro-F1) ...
                       max_evals=25,                 # ... but at most this many validations per run
                       log_every=10, ckpt_every=200, keep_checkpoints=2, async_checkpoint=True,
                       debug_nan_step=-1)
        c.supervised = ml_collections.ConfigDict(dict(
            num_classes=0, class_weights=(), label_smoothing=0.0))  # classes/weights filled at run time
    return c


def apply_variant(c: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    if variant in ("", "full"):
        return c
    if variant not in ("cpu", "tiny"):
        raise ValueError(f"unknown config variant {variant!r} (expected '', 'cpu' or 'tiny')")
    tiny = variant == "tiny"
    c.model.update(arch="resnet18", width=0.125 if tiny else 1.0, small_stem=tiny)  # cpu: torchvision stem
    c.data.update(image_size=32 if tiny else 64, eval_batch_size=64 if tiny else 128)
    if tiny:  # enough patients that val/test hold several each (the phantom varies per fetus)
        c.data.update(synthetic_images=300, synthetic_patients=30)
    if c.protocol == "probe":
        c.probe.update(epochs=100, batch_size=0 if tiny else 256, lr=1e-2 if tiny else 1e-3)
    if c.protocol == "finetune":
        c.train.update(batch_size=16 if tiny else 64, epochs=15 if tiny else 30, log_every=10,
                       min_steps=0 if tiny else 100,
                       ckpt_every=50 if tiny else 100, eval_every=20 if tiny else 0)
        if tiny:
            c.optim.update(base_lr=3e-3, lr_batch_scale=16)
            c.data.crop_scale = (0.8, 1.0)
    c.train.progress = not tiny
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    """Config values out of range fail here, before a store is simulated or anything is compiled
    (top-level keys here, each section by its validator in config_validation.py)."""
    if c.get("protocol") not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {c.get('protocol')!r}")
    if not 0 < float(c.fraction) <= 100:
        raise ValueError(f"fraction is a percentage of the labelled train split, in (0, 100]; got {c.fraction}")
    if int(c.seed) < 0:
        raise ValueError(f"seed must be >= 0, got {c.seed}")
    config_validation.check_data(c.data, size_from_encoder=True)
    config_validation.check_model(c.model)
    if c.protocol == "probe":
        config_validation.check_probe(c.probe)
    elif c.protocol == "knn":
        config_validation.check_knn(c.knn)
    else:
        if c.get("method", "supervised") != "supervised":
            raise ValueError(f"fine-tuning trains the 'supervised' method; got method={c.method!r}")
        config_validation.check_train(c.train)
        config_validation.check_optim(c.optim)
