"""Export an encoder (SSL or fine-tuned) as a torchvision-compatible safetensors state dict.

    python -m fetal_ssl_jax.evaluate.export <workdir or encoder dir> <out.safetensors> [--rgb] [--no-fc]

``--rgb`` spreads the grayscale stem over 3 input channels (kernel / 3 each), so a gray
image fed as RGB gives the same activations; without it conv1 takes 1 channel. A
``small_stem`` encoder (3x3 conv1, no max-pool) does not match torchvision's stem: the
weights load, but the torchvision module must be built with that stem (a warning says so).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np


def export_torchvision(encoder: str, out_path: str, rgb: bool = False, include_fc: bool = True) -> dict[str, Any]:
    """Writes ``out_path``; returns the encoder's meta (with 'warnings')."""
    from fetal_ssl_jax.models import torchvision_convert as tc
    from fetal_ssl_jax.train import encoder_io

    model_cfg, variables, meta = encoder_io.load_encoder(encoder)
    params = dict(variables["params"])
    if not include_fc:
        params.pop("fc", None)
    if rgb:
        stem = dict(params["conv1"])
        stem["kernel"] = np.repeat(np.asarray(stem["kernel"]) / 3.0, 3, axis=2)
        params["conv1"] = stem
    tc.save_safetensors({"params": params, "batch_stats": variables["batch_stats"]}, out_path)
    warnings = []
    if model_cfg.get("small_stem", False):
        warnings.append("small_stem encoder: conv1 is 3x3/1 with no max-pool, unlike torchvision's stem")
    if float(model_cfg.get("width", 1.0)) != 1.0:
        warnings.append(f"width {model_cfg.width}: channel counts differ from torchvision's resnet")
    return dict(meta, warnings=warnings, arch=model_cfg.arch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fetal_ssl_jax.evaluate.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoder", help="pretraining / fine-tuning workdir, or its encoder/ directory")
    p.add_argument("out", help="output .safetensors")
    p.add_argument("--rgb", action="store_true", help="3-channel conv1 (for RGB torchvision pipelines)")
    p.add_argument("--no-fc", action="store_true", help="drop a fine-tuned classifier head")
    a = p.parse_args(argv)
    meta = export_torchvision(a.encoder, a.out, a.rgb, not a.no_fc)
    for w in meta["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {a.out} ({meta['arch']}, method {meta.get('method')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
