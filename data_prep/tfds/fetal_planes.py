"""TFDS builder ``fetal_planes``: labelled plane stills split by patient (manual_dir with labels.csv)."""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from fetal_ssl_jax.data import labelled_builder as images, splits
from data_prep.tfds.fetal_frames import png_bytes
from fetal_ssl_jax.data.labelled_store import DEFAULT_CLASSES


@dataclasses.dataclass
class PlanesConfig(tfds.core.BuilderConfig):
    size: int = 256
    crop: str = "fan"
    csv: str = "labels.csv"
    classes: tuple[str, ...] = DEFAULT_CLASSES
    val_frac: float = 0.15
    test_frac: float = 0.15
    split_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    fractions: tuple[float, ...] = (1, 10, 100)


class FetalPlanes(tfds.core.GeneratorBasedBuilder):
    """Standard fetal cardiac planes; train/val/test by patient; nested label fractions in metadata."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Set manual_dir to the folder holding labels.csv (image_path,class,patient_id; "
                                    "paths relative to that folder).")
    BUILDER_CONFIGS = [PlanesConfig(name="s256", size=256), PlanesConfig(name="s64", size=64)]

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(c.size, c.size, 1), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=list(c.classes)),
                "patient_id": tfds.features.Text(), "image_id": tfds.features.Text()}),
            supervised_keys=("image", "label"), disable_shuffling=True,
            metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        c = self.builder_config
        root = os.fspath(dl_manager.manual_dir)
        rows, bad = images.read_csv(os.path.join(root, c.csv), root, c.classes)
        loaded = [(r, images.load_image((os.path.join(root, r.image_path), c.size, c.crop))) for r in rows]
        good = [(r, im) for r, im in loaded if not isinstance(im, str)]
        bad += [{"file": r.image_path, "line": r.line, "reason": im} for r, im in loaded if isinstance(im, str)]
        assign = splits.split_patients([r.patient_id for r, _ in good], [r.label for r, _ in good],
                                       len(c.classes), c.val_frac, c.test_frac, c.split_seed)
        split_of = {p: s for s, ps in assign.items() for p in ps}
        per = {s: [(r, im) for r, im in good if split_of[r.patient_id] == s] for s in splits.SPLITS}
        train_labels = [r.label for r, _ in per["train"]]
        self.info.metadata.update({
            "splits": {"seed": c.split_seed, **assign},
            "fractions": {str(sd): splits.nested_fractions(train_labels, c.fractions, sd, len(c.classes))
                          for sd in c.seeds},
            "skipped": bad})
        return {s: self._generate_examples(per[s]) for s in splits.SPLITS if per[s]}

    def _generate_examples(self, items: list) -> Iterator[tuple[str, dict]]:
        for i, (r, im) in enumerate(items):
            yield f"{i:08d}", {"image": png_bytes(np.asarray(im)), "label": r.label,
                               "patient_id": r.patient_id, "image_id": r.image_path}
