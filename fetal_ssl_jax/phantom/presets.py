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
    # total sweep videos; 0 = patients x videos_per_patient. With videos > 0 ('standard' design) the
    # videos are spread over `patients` (alias --video-patients) as evenly as possible: the number of
    # distinct patients at a fixed number of videos (and frames).
    videos: int = 0
    # variance-vs-size: 'standard' uses patients x videos_per_patient (or `videos` over `patients`);
    # 'variance' gives every video its own patient, 'size' packs the same number of videos into few patients.
    design: str = "standard"
    size_factor: int = 8               # videos per patient in the 'size' design
    # how much of a video's exam set-up (fetal pose: place, zoom, in-plane rotation, mirror; the sweep's
    # start, end and direction; gain/TGC/focus/PSF, maternal wall, depth and screen text) is its own (1)
    # rather than its patient's (0): the share, in normal scores, of that set-up's variance that lies
    # between videos of one patient. 1 = every video draws its own (the historical default, same bytes);
    # 0 = fixed per patient, so only the sweep's timing and jitter, fetal movements, cardiac phase and
    # speckle differ between a patient's videos. Every video's marginal distribution is the same at any value.
    video_variability: float = 1.0
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

    def total_videos(self) -> int:
        """Videos asked for: `videos`, or patients x videos_per_patient."""
        return self.videos if self.videos > 0 else self.patients * self.videos_per_patient

    def num_videos(self) -> int:
        return sum(self.video_counts())

    def video_patients(self) -> int:
        if self.design == "variance":
            return self.total_videos()
        if self.design == "size":
            return max(1, self.total_videos() // self.size_factor)
        if self.videos > 0:
            return max(1, min(self.patients, self.videos))
        return self.patients

    def videos_per_video_patient(self) -> int:
        """Videos of the video patient with the most (all have this many unless `videos` does not divide)."""
        return max(self.video_counts(), default=0)

    def video_counts(self) -> list[int]:
        """Number of videos of each video patient, in patient order."""
        n = self.total_videos()
        if self.design == "variance":
            return [1] * n
        if self.design == "size":
            return [self.size_factor if n >= self.size_factor else n] * self.video_patients()
        if self.videos > 0:
            k = self.video_patients()
            return [self.videos // k + (p < self.videos % k) for p in range(k)]
        return [self.videos_per_patient] * self.patients


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
    if not 0.0 <= cfg.video_variability <= 1.0:
        raise ValueError(f"video_variability must be in [0, 1], not {cfg.video_variability!r}")
    if cfg.videos < 0 or cfg.patients < 0 or (cfg.videos > 0 and cfg.patients < 1):
        raise ValueError("videos must be >= 0, and with videos > 0 patients (video patients) >= 1")
    if cfg.image_size % 2 or cfg.image_size < 32:
        raise ValueError("image_size must be even and >= 32")
    return cfg
