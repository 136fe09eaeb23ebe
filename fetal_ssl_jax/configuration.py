"""ml_collections configs from files: ``path/to/file.py[:arg]`` plus ``--config.a.b=value`` overrides.

Same convention as big_vision / flax examples (``get_config(arg)``), without absl flags,
so every launch.py subcommand can use it with argparse.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
from typing import Sequence

import ml_collections


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    path, _, arg = spec.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    name = "cfg_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {path!r} has no get_config(arg)")
    cfg = module.get_config(arg) if arg else module.get_config()
    return cfg


def _parse_value(text: str, current):
    if isinstance(current, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(float(text)) if float(text) == int(float(text)) else float(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str) or current is None:
        try:
            val = ast.literal_eval(text)
            return val if current is None else text
        except (ValueError, SyntaxError):
            return text
    if isinstance(current, (tuple, list)):
        val = ast.literal_eval(text)
        return type(current)(val) if isinstance(val, (tuple, list)) else type(current)([val])
    return ast.literal_eval(text)


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies ``--config.a.b=value`` strings; an unknown key is an error naming it."""
    for item in overrides:
        if not item.startswith("--config."):
            raise ValueError(f"unrecognised argument {item!r} (overrides look like --config.key=value)")
        key, sep, text = item[len("--config."):].partition("=")
        if not sep:
            raise ValueError(f"override {item!r} needs '=value'")
        node, parts = cfg, key.split(".")
        for p in parts[:-1]:
            if p not in node:
                raise KeyError(f"unknown config key {key!r}")
            node = node[p]
        leaf = parts[-1]
        if leaf not in node:
            raise KeyError(f"unknown config key {key!r}")
        try:
            value = _parse_value(text, node[leaf])
        except (ValueError, SyntaxError, TypeError) as e:
            raise ValueError(f"--config.{key}={text}: not a valid {type(node[leaf]).__name__} "
                             f"(current value {node[leaf]!r}): {e}") from None
        with node.unlocked() if hasattr(node, "unlocked") else _null():
            node[leaf] = value
    return cfg


def error_text(e: BaseException) -> str:
    """An exception's message for the user (a KeyError's str() adds quotes around it)."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def load(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    return apply_overrides(load_config_file(spec), overrides)


MODEL_DTYPES = ("auto", "float32", "bfloat16")


def auto_dtype(backend: str) -> str:
    """The compute dtype 'auto' stands for on a platform: bfloat16 on accelerators, float32 on CPU."""
    return "float32" if backend == "cpu" else "bfloat16"


def resolve_model_dtype(cfg: ml_collections.ConfigDict, backend: str | None = None) -> ml_collections.ConfigDict:
    """Replaces ``model.dtype='auto'`` by the platform's choice (``auto_dtype``), in place; returns cfg.

    Called once when a run starts, after ``jax.distributed.initialize`` (``backend=None`` asks
    ``jax.default_backend()``, which initialises the backends); an explicit dtype is kept.
    """
    model = cfg.get("model")
    if model is None or model.get("dtype", "float32") != "auto":
        return cfg
    if backend is None:
        import jax
        backend = jax.default_backend()
    with model.unlocked() if hasattr(model, "unlocked") else _null():
        model.dtype = auto_dtype(backend)
    return cfg


def config_hash(cfg: ml_collections.ConfigDict) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]


def code_version() -> str:
    """git describe of the checkout, or 'unknown' (e.g. an installed copy)."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"
