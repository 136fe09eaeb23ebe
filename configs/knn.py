"""Evaluation protocol 'knn' (see ../shared/PROTOCOL.md); variants '', 'cpu', 'tiny'."""
from fetal_ssl_jax.evaluate import defaults


def get_config(variant: str = ""):
    return defaults.apply_variant(defaults.eval_base("knn"), variant)
