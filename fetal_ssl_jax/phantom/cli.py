"""`launch.py synth`: write the synthetic fetal-echo export (or its preview sheet)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from fetal_ssl_jax.phantom.presets import PRESETS, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="synth_out", help="export folder (videos/, images/, labels.csv)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patients", "--video-patients", dest="patients", type=int,
                        help="patients with sweep videos (with --videos: the number of distinct patients the "
                             "videos come from)")
    parser.add_argument("--videos-per-patient", type=int)
    parser.add_argument("--videos", type=int,
                        help="sweep videos in total, spread as evenly as possible over --video-patients "
                             "(default: patients x videos-per-patient)")
    parser.add_argument("--video-variability", type=float,
                        help="0-1: how much of a video's pose, sweep start/end/direction and exam settings is "
                             "its own (1, default) rather than its patient's (0: shared by all her videos)")
    parser.add_argument("--frames", type=int, help="frames per video")
    parser.add_argument("--fps", type=float)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--format", choices=("mp4", "dicom", "avi"))
    parser.add_argument("--images", type=int, help="labelled stills in total")
    parser.add_argument("--labelled-patients", type=int)
    parser.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=None,
                        help="labelled patients are also video patients (default: disjoint)")
    parser.add_argument("--design", choices=("standard", "variance", "size"),
                        help="variance-vs-size: 'variance' = one video per patient, 'size' = --size-factor "
                             "videos per patient, same number of videos (and frames)")
    parser.add_argument("--size-factor", type=int)
    parser.add_argument("--variation", type=float, help="per-fetus anatomical variation (1 = default)")
    parser.add_argument("--rotation-deg", type=float, help="in-plane rotation range, +- degrees")
    parser.add_argument("--styles", type=int, help="number of scanner styles in the fleet (1-6)")
    parser.add_argument("--preview", action="store_true", help="write a PNG sheet of planes/phases/styles and a sweep strip")
    parser.add_argument("--preview-path", default=None, help="where --preview writes (default OUT/phantom_preview.png)")
    parser.add_argument("--workers", type=int, default=None, help="render threads (default: min(2, cores))")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    kw = dict(patients=args.patients, videos_per_patient=args.videos_per_patient, frames=args.frames, fps=args.fps,
              image_size=args.image_size, format=args.format, images=args.images,
              labelled_patients=args.labelled_patients, overlap=args.overlap, design=args.design,
              size_factor=args.size_factor, variation=args.variation, rotation_deg=args.rotation_deg,
              styles=args.styles, videos=args.videos, video_variability=args.video_variability)
    cfg = resolve(args.preset, **kw)
    if args.preview:
        from fetal_ssl_jax.phantom.preview import write_preview
        path = args.preview_path or os.path.join(args.out, "phantom_preview.png")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_preview(path, cfg, seed=args.seed)
        print(f"preview written to {path}")
        return 0
    from fetal_ssl_jax.phantom.export import generate
    summary = generate(args.out, cfg, seed=args.seed, progress=not args.no_progress and sys.stderr.isatty(),
                       log=print, workers=args.workers)
    print(json.dumps({k: summary[k] for k in ("num_videos", "num_frames", "num_images", "class_counts", "seconds")}))
    return 0
