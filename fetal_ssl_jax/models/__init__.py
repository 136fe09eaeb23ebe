"""Backbones (torchvision-compatible ResNets), projector/predictor MLPs and decoders."""
from fetal_ssl_jax.models.decoder import Decoder  # noqa: F401
from fetal_ssl_jax.models.mlp import MLP  # noqa: F401
from fetal_ssl_jax.models.resnet import (  # noqa: F401
    ARCHS,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    build_backbone,
    feature_dim,
)
