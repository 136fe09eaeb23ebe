"""Defaults shared by every pretraining config; each method file starts from these.

Variants (``configs/<method>.py:<variant>``): '' = full size (ResNet-50 at 256 px, as
the paper), 'cpu' = ResNet-18 at 64 px for laptops, 'tiny' = seconds on CPU, no data path.
"""
from __future__ import annotations

import ml_collections


def pretrain_base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = ""
    c.seed = 0

    c.model = ml_collections.ConfigDict(dict(
        arch="resnet50", width=1.0, small_stem=False, zero_init_residual=True,
        # Which kernels run (fetal_ssl_jax/models/ops.py): 'auto' = 'cpu_fast' on CPU (oneDNN, im2col,
        # hand-written gradients), 'xla' on GPU/TPU (XLA's kernels, autodiff); resolved once at build.
        ops="auto",
        # Compute dtype (parameters, BN statistics, losses and optimizer state stay float32). 'auto' =
        # bfloat16 on GPU/TPU, float32 on CPU: resolved once from jax.default_backend() when the run starts
        # (fetal_ssl_jax.configuration.resolve_model_dtype); the 'cpu' and 'tiny' variants are float32.
        dtype="auto"))

    c.data = ml_collections.ConfigDict(dict(
        store="",               # frame store dir; '' = generate a small synthetic store in the workdir
        image_size=256,
        crop_scale=(0.2, 1.0),  # random resized crop (host side)
        crop_ratio=(0.75, 1.3333),
        hflip=True,
        rotation=0.0,           # max degrees of a random rotation before the crop (0 = off)
        temporal_window=0,      # >0: second view from another frame of the same video within +-N frames
        workers=0,              # grain worker processes (0 = in-process); changes nothing but speed
        prefetch=2,
        synthetic_videos=8,     # used only when store == ''
        synthetic_frames=32,
    ))

    # On-device photometric augmentation; pairs are (view1, view2) probabilities (BYOL-style asymmetry).
    c.aug = ml_collections.ConfigDict(dict(
        brightness=0.4, contrast=0.4, gamma=0.3, jitter_prob=0.8,
        blur_prob=(1.0, 0.1), blur_sigma=(0.1, 2.0),
        noise_prob=(0.5, 0.5), noise_std=0.25,       # multiplicative speckle-like noise
        solarize_prob=(0.0, 0.2),
        mean=0.5, std=0.25,                          # normalisation after augmentation
    ))

    c.optim = ml_collections.ConfigDict(dict(
        name="lars", base_lr=0.2, lr_batch_scale=256, warmup_steps=100, weight_decay=1.5e-6,
        momentum=0.9, trust_coefficient=0.001, b1=0.9, b2=0.999, end_lr_factor=0.0, grad_clip=0.0,
        lr_scaling="linear",    # peak LR = base_lr x batch / lr_batch_scale; 'sqrt': base_lr x sqrt(batch)
        bias_lr_factor=1.0,     # LR of biases and BN parameters relative to the weights'
        warmup_epochs=0.0))     # > 0: warmup_steps from epochs of the frame store (paper-scale recipes)

    c.train = ml_collections.ConfigDict(dict(
        steps=1000, batch_size=256,
        epochs=0.0,  # steps = 0 and epochs > 0: ceil(epochs x store frames / batch) steps (train/pretrain.py)
        log_every=10, ckpt_every=200, keep_checkpoints=2,
        rankme_every=50, progress=True, async_checkpoint=True,
        debug_nan_step=-1,  # >=0: a NaN put into the parameters before this step (tests of the non-finite guard)
        rankme_samples=2048,  # RankMe over the last this many embeddings, a few from each step (monitors.RankMeBuffer)
    ))

    # Downstream quality while pretraining (fetal_ssl_jax/evaluate/monitor.py): kNN val macro-F1 of the current
    # encoder on a fixed, class-stratified subset of a labelled store, logged as knn_val_f1 / knn_val_acc.
    c.monitor = ml_collections.ConfigDict(dict(
        every=0,             # every N steps (and at the last step); 0 = off
        labelled_store="",   # a store from `launch.py prepare images`; needed when every > 0
        max_train=1000,      # kNN bank: at most this many train images (class-stratified, fixed)
        max_val=500,         # queries: at most this many val images (class-stratified, fixed)
        fraction=100,        # the bank comes from this label fraction's train subset (split seed 0)
        k=20, temperature=0.07,
        batch_size=256,      # forward batch
    ))

    # Distributed launch (normally from SLURM / TPU env; flags override).
    c.dist = ml_collections.ConfigDict(dict(coordinator="", num_processes=0, process_id=-1))
    return c


def paper_schedule(c: ml_collections.ConfigDict, epochs: float, warmup_epochs: float) -> None:
    """The paper-scale ('') variant's length in epochs of the frame store, as the method's reference states
    it (ImageNet recipes: hundreds of epochs, ~1 % warmup); lower ``--config.train.epochs`` for a big store."""
    c.train.update(steps=0, epochs=float(epochs))
    c.optim.warmup_epochs = float(warmup_epochs)


def apply_variant(c: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """Model/data/step sizes for the named variant; method knobs stay the method's."""
    if variant in ("", "full"):
        return c
    if variant == "cpu":
        # torchvision's stem (stride 4 before layer1), as the paper at 256 px: at 64 px layer1 runs at
        # 16x16; a stride-1 stem would cost ~25x more FLOPs for little gain on CPU.
        c.model.update(arch="resnet18", width=1.0, small_stem=False, dtype="float32")
        c.data.update(image_size=64, crop_scale=(0.35, 1.0))
        # Pixel-sized augmentations scaled to 64 px: a blur sigma of up to 2 px and 25% speckle noise (sized
        # for 224 px) erase the 3-4 px cardiac chambers here, and a 20%-area crop often misses the heart.
        c.aug.update(blur_sigma=(0.1, 0.6), noise_std=0.1)
        c.train.update(batch_size=64, steps=600, log_every=10, ckpt_every=100, rankme_every=50)
        c.optim.warmup_steps = 50
        return c
    if variant == "tiny":
        c.model.update(arch="resnet18", width=0.125, small_stem=True, dtype="float32")
        c.data.update(image_size=32, synthetic_videos=4, synthetic_frames=16)
        c.train.update(batch_size=16, steps=6, log_every=1, ckpt_every=3, rankme_every=3, rankme_samples=32,
                       progress=False)
        c.optim.warmup_steps = 2
        return c
    raise ValueError(f"unknown config variant {variant!r} (expected '', 'cpu' or 'tiny')")
