"""TFDS builder ``fetal_frames``: unlabelled scan frames from an export folder (manual_dir)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from data_prep import frames, readers, sources


def png_bytes(img: np.ndarray) -> bytes:
    """Encoded PNG: the Image feature stores bytes as given, so no TensorFlow encoder is needed."""
    from PIL import Image
    b = io.BytesIO()
    Image.fromarray(img).save(b, format="PNG", compress_level=1)
    return b.getvalue()


@dataclasses.dataclass
class FramesConfig(tfds.core.BuilderConfig):
    size: int = 256
    stride: int = 5
    crop: str = "fan"
    patient_pattern: str | None = None
    salt: str | None = None  # salt for DICOM PatientIDs; default: random, kept beside the data


class FetalFrames(tfds.core.GeneratorBasedBuilder):
    """Frames of scan videos / DICOM cine / HDF5 stacks / PNG sequences, cropped to the fan."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Set manual_dir to your export folder: videos/<patient>/<video>.mp4, DICOM cine "
                                    "(.dcm), HDF5 frame stacks (.h5) or folders of numbered PNGs.")
    BUILDER_CONFIGS = [FramesConfig(name="s256", size=256, stride=5),
                       FramesConfig(name="s64", size=64, stride=5, description="small, for CPU tests")]

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.size
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(s, s, 1), encoding_format="png"),
                "video_id": tfds.features.Text(), "patient_id": tfds.features.Text(),
                "frame_index": tfds.features.Tensor(shape=(), dtype=np.int64)}),
            disable_shuffling=True)  # records of a video stay contiguous and in frame order

    def _settings(self) -> tuple[frames.FrameSettings, str]:
        c = self.builder_config
        root = getattr(self, "_data_dir_root", None) or os.path.expanduser("~/tensorflow_datasets")
        os.makedirs(root, exist_ok=True)
        salt = c.salt or frames.resolve_salt(root, None)
        st = frames.FrameSettings(size=c.size, stride=c.stride, crop=c.crop, patient_pattern=c.patient_pattern,
                                  salt_sha256=hashlib.sha256(salt.encode()).hexdigest())
        return st, salt

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"train": self._generate_examples(os.fspath(dl_manager.manual_dir))}

    def _generate_examples(self, root: str) -> Iterator[tuple[str, dict]]:
        st, salt = self._settings()
        srcs, _ = sources.discover(root)
        n = 0
        for src in srcs:
            try:
                for clip in readers.open_source(src.path, src.kind, seq_files=list(src.files)):
                    pid = frames.patient_id_for(src, clip, st, salt)
                    vid = src.video_id + (f"/{clip.name.strip('/')}" if clip.name else "")
                    for idx, out in frames.iter_clip(clip, st, {}):
                        # zero-padded running keys: TFDS writes in key order == frame order
                        yield f"{n:012d}", {"image": png_bytes(out),
                                            "video_id": vid, "patient_id": pid, "frame_index": idx}
                        n += 1
            except readers.BadSource as e:
                print(f"fetal_frames: skipped {src.rel}: {e}")
