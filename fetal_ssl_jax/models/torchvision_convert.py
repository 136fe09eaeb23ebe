"""Convert between torchvision ResNet state dicts and our Flax ResNet variables.

Used for ImageNet initialisation (torchvision weights -> our backbone, with 3->1 channel
folding for grayscale ultrasound) and for export (our encoder -> a state dict that
``torchvision.models.resnet50().load_state_dict`` accepts). Names map mechanically
because models/resnet.py uses torchvision's module names ('.'-joined indices become
'_'): ``layer2.0.downsample.1.running_var`` <-> batch_stats['layer2_0']['downsample_1']['var'].

Layouts: conv OIHW <-> HWIO; Linear [out, in] <-> Dense [in, out]; BN weight/bias <->
scale/bias (params), running_mean/running_var <-> mean/var (batch_stats).
``num_batches_tracked`` is dropped on import and written as 0 on export (torch's strict
loading expects it; it only matters for momentum=None BN, which torchvision does not use).
PyTorch itself is needed only to read .pth/.pt files.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

Variables = dict[str, dict[str, Any]]

_BN_TO_OURS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
               "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
_OURS_TO_BN = {v: k for k, v in _BN_TO_OURS.items()}
_BN_ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _module_path(parts: list[str]) -> tuple[str, ...]:
    """['layer1', '0', 'downsample', '1'] -> ('layer1_0', 'downsample_1')."""
    out: list[str] = []
    for p in parts:
        if p.isdigit():
            if not out:
                raise KeyError(f"unexpected numeric module name in {'.'.join(parts)!r}")
            out[-1] = f"{out[-1]}_{p}"
        else:
            out.append(p)
    return tuple(out)


def _torch_prefix(path: tuple[str, ...]) -> str:
    """('layer1_0', 'downsample_1') -> 'layer1.0.downsample.1'."""
    return ".".join(re.sub(r"_(\d+)$", r".\1", p) for p in path)


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    if path[-1] in tree:
        raise KeyError(f"duplicate entry for {'/'.join(path)}")
    tree[path[-1]] = value


def _is_bn(path: tuple[str, ...]) -> bool:
    last = path[-1]
    return last.startswith("bn") or last == "downsample_1"


def from_torchvision(state_dict: Mapping[str, Any], in_channels: int = 1, reduce: str = "mean",
                     include_fc: bool = True) -> Variables:
    """torchvision ResNet state dict -> {'params': ..., 'batch_stats': ...} (float32 NumPy).

    ``in_channels=1`` folds the RGB stem filters into one channel: 'sum' keeps the
    response to a gray image equal to that of the RGB network on the same gray value in
    each channel; 'mean' keeps the filter scale (for inputs normalised per channel).
    ``include_fc=False`` drops the classifier (SSL backbones have none).
    """
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    params: dict = {}
    stats: dict = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        leaf = parts[-1]
        if leaf == "num_batches_tracked":
            continue
        path = _module_path(parts[:-1])
        if path[0] == "fc" and not include_fc:
            continue
        arr = np.asarray(value)
        if arr.ndim == 4 and leaf == "weight":  # conv: OIHW -> HWIO
            arr = arr.transpose(2, 3, 1, 0)
            if path == ("conv1",) and arr.shape[2] != in_channels:
                if arr.shape[2] == 3 and in_channels == 1:
                    arr = arr.sum(axis=2, keepdims=True) if reduce == "sum" else arr.mean(axis=2, keepdims=True)
                else:
                    raise ValueError(f"cannot adapt a {arr.shape[2]}-channel stem to {in_channels} channels")
            _set(params, path + ("kernel",), arr.astype(np.float32))
        elif arr.ndim == 2 and leaf == "weight":  # Linear [out, in] -> Dense [in, out]
            _set(params, path + ("kernel",), arr.T.astype(np.float32))
        elif arr.ndim == 1 and path[0] == "fc" and leaf == "bias":
            _set(params, path + ("bias",), arr.astype(np.float32))
        elif arr.ndim == 1 and leaf in _BN_TO_OURS:
            collection, name = _BN_TO_OURS[leaf]
            _set(params if collection == "params" else stats, path + (name,), arr.astype(np.float32))
        else:
            raise KeyError(f"unrecognised state-dict entry {key!r} with shape {arr.shape}")
    return {"params": params, "batch_stats": stats}


def _block_sort_key(name: str) -> tuple:
    """torchvision module order: conv1, bn1, layerS_B..., fc; inside blocks convK/bnK, downsample."""
    m = re.fullmatch(r"layer(\d+)_(\d+)", name)
    if m:
        return (1, int(m.group(1)), int(m.group(2)), "")
    m = re.fullmatch(r"(conv|bn)(\d+)", name)
    if m:
        return (0, int(m.group(2)), 0 if m.group(1) == "conv" else 1, "")
    m = re.fullmatch(r"downsample_(\d+)", name)
    if m:
        return (2, int(m.group(1)), 0, "")
    return (3, 0, 0, name)


def to_torchvision(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Our ResNet variables -> torchvision state dict (NumPy, float32; BN counters int64 0)."""
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    out: dict[str, np.ndarray] = {}

    def walk(p: Mapping, s: Mapping, path: tuple[str, ...]) -> None:
        for name in sorted(p, key=_block_sort_key):
            node = p[name]
            sub = path + (name,)
            if any(isinstance(v, Mapping) for v in node.values()):
                walk(node, s.get(name, {}), sub)
                continue
            prefix = _torch_prefix(sub)
            if "kernel" in node and np.ndim(node["kernel"]) == 4:
                out[prefix + ".weight"] = np.ascontiguousarray(
                    np.asarray(node["kernel"], np.float32).transpose(3, 2, 0, 1))
            elif "kernel" in node:
                out[prefix + ".weight"] = np.ascontiguousarray(np.asarray(node["kernel"], np.float32).T)
                if "bias" in node:
                    out[prefix + ".bias"] = np.asarray(node["bias"], np.float32)
            elif _is_bn(sub):
                bn_stats = s.get(name, {})
                if "mean" not in bn_stats or "var" not in bn_stats:
                    raise KeyError(f"batch_stats for {'/'.join(sub)} missing")
                leaves = {("params", k): v for k, v in node.items()}
                leaves.update({("batch_stats", k): v for k, v in bn_stats.items()})
                for tname in _BN_ORDER:
                    if tname == "num_batches_tracked":
                        out[f"{prefix}.{tname}"] = np.zeros((), np.int64)
                    else:
                        out[f"{prefix}.{tname}"] = np.asarray(leaves[_BN_TO_OURS[tname]], np.float32)
            else:
                raise KeyError(f"don't know how to export {'/'.join(sub)} with leaves {sorted(node)}")

    walk(params, stats, ())
    return out


def check_compatible(variables: Mapping[str, Any], reference: Mapping[str, Any]) -> None:
    """Raises ValueError listing missing, unexpected and mis-shaped entries vs ``reference``
    (e.g. ``jax.eval_shape`` of the model's init), so a wrong checkpoint fails loudly."""
    def flat(tree: Mapping, prefix: str = "") -> dict[str, tuple]:
        res: dict[str, tuple] = {}
        for k, v in tree.items():
            if isinstance(v, Mapping):
                res.update(flat(v, f"{prefix}{k}/"))
            else:
                res[prefix + k] = tuple(np.shape(v))
        return res

    problems = []
    for col in ("params", "batch_stats"):
        got, want = flat(variables.get(col, {})), flat(reference.get(col, {}))
        problems += [f"missing {col}/{k} {want[k]}" for k in sorted(set(want) - set(got))]
        problems += [f"unexpected {col}/{k} {got[k]}" for k in sorted(set(got) - set(want))]
        problems += [f"shape {col}/{k}: got {got[k]}, model wants {want[k]}"
                     for k in sorted(set(got) & set(want)) if got[k] != want[k]]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"checkpoint does not fit the model:\n  {shown}{more}")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a state dict from .safetensors, .npz, or .pth/.pt (the latter needs torch).

    Checkpoints that wrap the weights (``{'state_dict': ...}``, ``{'model': ...}``) or
    carry DataParallel's ``module.`` prefix are unwrapped.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        from safetensors.numpy import load_file

        sd: Mapping[str, Any] = load_file(path)
    elif ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            sd = {k: z[k] for k in z.files}
    elif ext in (".pth", ".pt"):
        try:
            import torch
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"reading {path} needs PyTorch (pip install torch); or convert it once to "
                ".safetensors or .npz on a machine that has it") from e
        sd = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
                sd = sd[wrapper]
        sd = {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in sd.items()}
    else:
        raise ValueError(f"unsupported state-dict format {ext!r} (use .safetensors, .npz, .pth or .pt)")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def save_safetensors(variables: Mapping[str, Any], path: str) -> None:
    """Exports our ResNet variables as a torchvision-compatible safetensors state dict."""
    from safetensors.numpy import save_file

    save_file(to_torchvision(variables), path, metadata={"format": "pt", "source": "fetal_ssl_jax"})
