"""Linear probe: frozen encoder incl. BatchNorm, cached features, weighted-CE linear head,
epoch chosen on validation macro-F1.

    python launch.py probe --config configs/probe.py[:cpu|:tiny] --workdir DIR \\
        --config.init=<random|SSL workdir|imagenet:resnet50.safetensors> --config.fraction=1 --config.seed=0 \\
        --config.data.store=<labelled store>
"""
from fetal_ssl_jax.evaluate import defaults


def get_config(variant: str = ""):
    return defaults.apply_variant(defaults.eval_base("probe"), variant)
