"""Dataset presets and every knob of a synthetic export, in one frozen dataclass."""
from __future__ import annotations

import dataclasses
from typing import Any

CLASS_FREQUENCIES = (0.38, 0.18, 0.16, 0.16, 0.12)  # 4CH most common, as in clinical exports


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    image_size: int = 64
    # unlabelled sweep videos
    patients: int = 3                  # patients with videos
    videos_per_patient: int = 1
    frames: int = 16
    fps: float = 25.0
    format: str = "mp4"                # mp4 | dicom | avi
    # variance-vs-size: 'standard' uses patients x videos_per_patient; 'variance' gives every
    # video its own patient, 'size' packs the same number of videos into few patients.
    design: str = "standard"
    size_factor: int = 8               # videos per patient in the 'size' design
    # labelled stills
    labelled_patients: int = 6
    images: int = 60
    class_frequencies: tuple[float, ...] = CLASS_FREQUENCIES
    overlap: bool = False              # labelled patients are (the first) video patients
    # difficulty
    variation: float = 1.0             # per-fetus anatomical variation
    rotation_deg: float = 180.0        # in-plane rotation range (+-)
    still_jitter: float = 0.4          # stills' sweep position spread, fraction of the plane window
    style_jitter: float = 1.0          # per-exam scanner setting variation
    styles: int = 6                    # machine styles in the fleet

    def num_videos(self) -> int:
        return self.video_patients() * self.videos_per_video_patient()

    def video_patients(self) -> int:
        if self.design == "variance":
            return self.patients * self.videos_per_patient
        if self.design == "size":
            return max(1, (self.patients * self.videos_per_patient) // self.size_factor)
        return self.patients

    def videos_per_video_patient(self) -> int:
        if self.design == "variance":
            return 1
        if self.design == "size":
            return self.size_factor if self.patients * self.videos_per_patient >= self.size_factor else self.patients * self.videos_per_patient
        return self.videos_per_patient


PRESETS: dict[str, dict[str, Any]] = {
    # whole export in a few seconds: tests and CI
    "tiny": dict(image_size=64, patients=3, videos_per_patient=1, frames=16, labelled_patients=6, images=60),
    # end-to-end CPU demo (generate + prepare + pretrain + probe/fine-tune) in ~15 min on 2 cores
    # 5000 stills so that 1% of the labels is ~35 images (7 per class), not a dozen: with 13 images the
    # seed-to-seed spread of any 1% result swamps every difference between initialisations.
    "demo": dict(image_size=128, patients=16, videos_per_patient=2, frames=64, labelled_patients=100, images=5000),
    # the scale of the paper (17,209 labelled images, 575 videos); for accelerators
    "paper": dict(image_size=256, patients=115, videos_per_patient=5, frames=300, labelled_patients=400, images=17209),
}


def resolve(preset: str = "tiny", **overrides: Any) -> PhantomConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    kw = dict(PRESETS[preset])
    fields = {f.name for f in dataclasses.fields(PhantomConfig)}
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in fields:
            raise TypeError(f"unknown phantom setting {k!r}; known: {sorted(fields)}")
        kw[k] = tuple(v) if isinstance(v, list) else v
    cfg = PhantomConfig(**kw)
    if cfg.format not in ("mp4", "dicom", "avi"):
        raise ValueError(f"format must be mp4, dicom or avi, not {cfg.format!r}")
    if cfg.design not in ("standard", "variance", "size"):
        raise ValueError(f"design must be standard, variance or size, not {cfg.design!r}")
    if cfg.image_size % 2 or cfg.image_size < 32:
        raise ValueError("image_size must be even and >= 32")
    return cfg
