"""TFDS builders over the same conversion as ``prepare``: ArrayRecord output, no TensorFlow.

Use ``builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
manual_dir=EXPORT))`` then ``builder.as_data_source()`` (grain-compatible). Never
``tfds.load``/``as_dataset``: those need TensorFlow.
"""
from data_prep.tfds.fetal_frames import FetalFrames, FramesConfig
from data_prep.tfds.fetal_planes import FetalPlanes, PlanesConfig

__all__ = ["FetalFrames", "FramesConfig", "FetalPlanes", "PlanesConfig"]
