"""Where an evaluated network's weights come from: ``random`` | SSL encoder | ``imagenet:<path>``.

Resolves ``config.init`` to the backbone config, its variables (None for random) and the
input normalisation/size the weights expect, so probe, fine-tune and kNN treat all
three alike. A classifier head ('fc') saved with an encoder is dropped: the protocol
always trains a fresh head.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np


@dataclasses.dataclass
class Init:
    kind: str                                 # 'random' | 'ssl' | 'imagenet'
    method: str                               # what metrics.json reports: 'random', 'imagenet' or the SSL method
    model_cfg: ml_collections.ConfigDict
    variables: dict[str, Any] | None          # {'params', 'batch_stats'} NumPy, no 'fc'; None = random
    mean: float
    std: float
    image_size: int
    source: str = ""                          # path of the weights
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """Provenance for metrics.json."""
        keep = ("method", "step", "config_hash", "code_version")
        return dict(kind=self.kind, method=self.method, source=self.source,
                    **{f"encoder_{k}": self.meta[k] for k in keep if k in self.meta})


def strip_head(variables: dict[str, Any]) -> dict[str, Any]:
    return {"params": {k: v for k, v in variables["params"].items() if k != "fc"},
            "batch_stats": dict(variables.get("batch_stats", {}))}


def infer_torchvision_arch(state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
    """arch / width / stem of a torchvision ResNet state dict (so no flag can disagree with the file)."""
    from fetal_ssl_jax.models.resnet import ARCHS
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in state_dict)
    blocks = tuple(len({k.split(".")[1] for k in state_dict if k.startswith(f"layer{s}.")}) for s in range(1, 5))
    matches = [a for a, (sizes, block) in ARCHS.items()
               if tuple(sizes) == blocks and (block == "bottleneck") == bottleneck]
    if not matches:
        raise ValueError(f"state dict is not a known torchvision ResNet (blocks per stage {blocks}, "
                         f"bottleneck={bottleneck}); known: {sorted(ARCHS)}")
    stem = np.asarray(state_dict["conv1.weight"])
    return dict(arch=matches[0], width=stem.shape[0] / 64.0, small_stem=stem.shape[-1] == 3)


def resolve(cfg: ml_collections.ConfigDict) -> Init:
    spec = str(cfg.init).strip()
    size = int(cfg.data.image_size)
    if spec in ("", "random"):
        return Init("random", "random", ml_collections.ConfigDict(cfg.model.to_dict()), None,
                    float(cfg.normalize.mean), float(cfg.normalize.std), size or 256)
    if spec.startswith("imagenet:"):
        return _imagenet(cfg, spec[len("imagenet:"):], size or 256)
    from fetal_ssl_jax.train import encoder_io
    model_cfg, variables, meta = encoder_io.load_encoder(spec)
    if "dtype" in cfg.model:  # compute dtype is the evaluation's choice, not the encoder's
        model_cfg.dtype = cfg.model.dtype
    norm = meta.get("normalize", {})
    return Init("ssl", str(meta.get("method", "ssl")), model_cfg, strip_head(variables),
                float(norm.get("mean", 0.5)), float(norm.get("std", 0.25)), size or int(meta.get("image_size", 256)),
                source=encoder_io.resolve(spec), meta=meta)


def _imagenet(cfg: ml_collections.ConfigDict, path: str, size: int) -> Init:
    from fetal_ssl_jax.models import torchvision_convert as tc
    sd = tc.load_state_dict(path)
    arch = infer_torchvision_arch(sd)
    model_cfg = ml_collections.ConfigDict(dict(cfg.model.to_dict(), **arch))
    variables = tc.from_torchvision(sd, in_channels=1, reduce=str(cfg.imagenet.reduce), include_fc=False)
    return Init("imagenet", "imagenet", model_cfg, variables, float(cfg.imagenet.mean), float(cfg.imagenet.std),
                size, source=path, meta=dict(method="imagenet"))


def check_fits(variables: dict[str, Any], reference: dict[str, Any]) -> None:
    """Raises with the differing names/shapes if ``variables`` do not fit ``reference`` (abstract init)."""
    from fetal_ssl_jax.models import torchvision_convert as tc
    tc.check_compatible(variables, reference)
