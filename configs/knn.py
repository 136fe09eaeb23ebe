"""kNN: k=20 nearest train-subset neighbours by cosine similarity on frozen features,
votes weighted by exp(sim / 0.07).

    python launch.py knn --config configs/knn.py[:cpu|:tiny] --workdir DIR --config.init=<SSL workdir> \\
        --config.fraction=100 --config.data.store=<labelled store>
"""
from fetal_ssl_jax.evaluate import defaults


def get_config(variant: str = ""):
    return defaults.apply_variant(defaults.eval_base("knn"), variant)
