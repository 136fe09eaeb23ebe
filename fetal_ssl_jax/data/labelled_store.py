"""The labelled store: plane images with class labels, split by patient.

Layout of a store directory::

    classes.json          ["4CH", "LVOT", "RVOT", "3VV", "3VT"]  (index = label; fixed, never shifted)
    train.array_record    records: image, h, w, label, class_name, patient_id, image_id
    val.array_record
    test.array_record
    splits.json           {"seed": s, "train": [patient ids], "val": [...], "test": [...]}
    fractions.json        {"<seed>": {"1": [train record indices], "10": [...], "100": [...]}}  nested
    manifest.json         {"schema": "fetal-planes/1", counts per split and class, settings, skipped inputs}

``fractions.json`` indexes records of ``train.array_record``; subsets are nested
(1 ⊂ 10 ⊂ 100) and hold at least one image per class.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from fetal_ssl_jax.data import records

SCHEMA = "fetal-planes/1"
SPLITS = ("train", "val", "test")
DEFAULT_CLASSES = ("4CH", "LVOT", "RVOT", "3VV", "3VT")


def image_record(image: np.ndarray, label: int, class_name: str, patient_id: str, image_id: str) -> dict[str, Any]:
    rec = records.encode_image(image)
    rec.update(label=int(label), class_name=str(class_name), patient_id=str(patient_id), image_id=str(image_id))
    return rec


def _dump(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


INDEX_FILES = ("classes.json", "splits.json", "fractions.json", "manifest.json")  # manifest.json last


def write_index(store: str, classes: Sequence[str], splits: dict, fractions: dict, manifest: dict,
                suffix: str = "") -> None:
    """Writes the index files (as ``<name><suffix>`` when staging a rebuild, see ``commit_staged``)."""
    os.makedirs(store, exist_ok=True)
    objs = (list(classes), splits, fractions, dict(manifest, schema=SCHEMA))
    for name, obj in zip(INDEX_FILES, objs):
        _dump(os.path.join(store, name + suffix), obj)


def commit_staged(store: str, names: Sequence[str], suffix: str) -> None:
    """Renames staged ``<name><suffix>`` files into place; manifest.json goes first and comes back last.

    Everything that takes space was written before, so this cannot fail for lack of space; a
    process killed in between leaves a store without manifest.json, which refuses to open
    (never a mix of old and new files that opens).
    """
    manifest = os.path.join(store, "manifest.json")
    if os.path.exists(manifest):
        os.remove(manifest)
    for name in sorted(names, key=lambda n: n == "manifest.json"):
        os.replace(os.path.join(store, name + suffix), os.path.join(store, name))


def _fraction_key(fraction: float | int | str) -> str:
    f = float(fraction)
    return str(int(f)) if f == int(f) else repr(f)


@dataclasses.dataclass
class LabelledStore:
    path: str
    classes: list[str]
    fractions: dict[str, dict[str, list[int]]]
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str) -> "LabelledStore":
        from fetal_ssl_jax.object_storage import require_file_path
        require_file_path(path, "labelled store")

        def load(name):
            p = os.path.join(path, name)
            if not os.path.exists(p):
                raise FileNotFoundError(f"{path}: missing {name}; is this a labelled store (launch.py prepare images)?")
            with open(p) as f:
                return json.load(f)
        manifest = load("manifest.json")
        if manifest.get("schema") != SCHEMA:
            raise ValueError(f"{path}/manifest.json: schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
        return cls(path, load("classes.json"), load("fractions.json"), manifest)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def source(self, split: str) -> "grain.sources.ArrayRecordDataSource":
        import grain  # lazy: the data_prep writers and their worker processes never need JAX

        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return grain.sources.ArrayRecordDataSource([os.path.join(self.path, f"{split}.array_record")])

    def subset_indices(self, fraction: float | int | str, seed: int) -> np.ndarray:
        """Indices into the train split for a label fraction (in percent) and split seed."""
        per_seed = self.fractions.get(str(seed))
        if per_seed is None:
            raise KeyError(f"{self.path}: no label fractions for seed {seed}; have {sorted(self.fractions)}")
        key = _fraction_key(fraction)
        if key not in per_seed:
            raise KeyError(f"{self.path}: no {key}% subset for seed {seed}; have {sorted(per_seed)}")
        return np.asarray(per_seed[key], np.int64)

    def load_split(self, split: str, indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [N, H, W], labels int32 [N]) of a split (small stores / eval sets)."""
        src = self.source(split)
        idx = range(len(src)) if indices is None else [int(i) for i in indices]
        recs = [records.unpack(src[i]) for i in idx]
        if not recs:
            return np.zeros((0, 1, 1), np.uint8), np.zeros((0,), np.int32)
        imgs = np.stack([records.decode_image(r) for r in recs])
        return imgs, np.asarray([r["label"] for r in recs], np.int32)
