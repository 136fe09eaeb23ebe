"""Full fine-tune: whole network, weighted CE, warmup + cosine per step, mild grayscale
on-device augmentation, model selected on validation macro-F1; resumes from its checkpoints.

    python launch.py finetune --config configs/finetune.py[:cpu|:tiny] --workdir DIR \\
        --config.init=<random|SSL workdir|imagenet:resnet50.safetensors> --config.fraction=1 --config.seed=0 \\
        --config.data.store=<labelled store>
"""
from fetal_ssl_jax.evaluate import defaults


def get_config(variant: str = ""):
    return defaults.apply_variant(defaults.eval_base("finetune"), variant)
