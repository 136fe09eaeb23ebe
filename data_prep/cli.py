"""``launch.py prepare frames|images``: the command line of data preparation.

Exit codes: 0 done; 1 some inputs were skipped and ``--strict`` was given; 2 usage
or store error (wrong settings for an existing store, store busy, no inputs); 74 the
store could not be written (disk full, permissions): what was complete before is kept.
"""
from __future__ import annotations

import argparse
import os
import sys

from fetal_ssl_jax import errors
from fetal_ssl_jax.data.labelled_store import DEFAULT_CLASSES


def _csv_list(cast):
    def parse(text: str):
        return tuple(cast(t.strip()) for t in text.split(",") if t.strip())
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="frames|images|merge")
    f = sub.add_parser("frames", help="unlabelled scan videos / DICOM cine / HDF5 / PNG sequences -> frame store")
    f.add_argument("--src", required=True, help="export folder, searched recursively (non-media files are ignored)")
    f.add_argument("--out", required=True, help="frame store folder; rerunning on it finishes or extends it")
    f.add_argument("--size", type=int, default=256, help="output frames are size x size (aspect kept, padded)")
    f.add_argument("--stride", type=int, default=5, help="keep every stride-th source frame")
    f.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding processes (0 = in this process, for debugging)")
    f.add_argument("--threads", type=int, default=1, help="decoder threads per worker")
    f.add_argument("--crop", choices=("fan", "none"), default="fan", help="crop to the detected ultrasound fan")
    f.add_argument("--dedup-threshold", type=float, default=1.0,
                   help="drop a frame whose mean |difference| to the previous kept frame is below this (0 = off)")
    f.add_argument("--fan-frames", type=int, default=32, help="frames sampled per video to find the fan")
    f.add_argument("--patient-pattern", default=None,
                   help="regex on the source path relative to --src; group 'patient' (or group 1) is the "
                        "patient id. Default: DICOM PatientID (salted hash), else the video's folder name")
    f.add_argument("--salt", default=None, help="salt for hashing DICOM PatientIDs (default: a random one kept "
                                                "in STORE/patient_salt; reuse it to make ids comparable)")
    f.add_argument("--overwrite", action="store_true", help="discard what is in --out and start again")
    f.add_argument("--doppler", choices=("keep-grey", "skip", "as-is"), default="keep-grey",
                   help="colour-flow (Doppler) frames: keep-grey = keep them with the colour pixels set to black, "
                        "as blood looks in B-mode (default); skip = drop them; as-is = grey of the colour image")
    f.add_argument("--mm-per-pixel", type=float, default=None,
                   help="resample DICOM with an Ultrasound Region Calibration to this many mm per output pixel "
                        "(default: fit the scan region to --size; its mm/px is recorded in the manifest)")
    f.add_argument("--stride-ms", type=float, default=None,
                   help="sample one frame per this many ms of scan time, from each video's frame timing (DICOM "
                        "FrameTime/FrameTimeVector/CineRate, container rate); videos without timing use --stride")
    _common(f)
    i = sub.add_parser("images", help="labelled stills + labels.csv -> labelled store with splits and fractions")
    i.add_argument("--csv", required=True, help="CSV with columns image_path,class,patient_id")
    i.add_argument("--root", default=None, help="folder image_path is relative to (default: the CSV's folder)")
    i.add_argument("--out", required=True, help="labelled store folder")
    i.add_argument("--size", type=int, default=256)
    i.add_argument("--crop", choices=("fan", "none"), default="fan")
    i.add_argument("--classes", type=_csv_list(str), default=DEFAULT_CLASSES,
                   help="class names in label order (fixed indices), comma separated")
    i.add_argument("--seed", type=int, nargs="+", default=[0, 1, 2], help="label-fraction seeds")
    i.add_argument("--split-seed", type=int, default=None, help="patient split seed (default: the first --seed)")
    i.add_argument("--fractions", type=_csv_list(float), default=(1.0, 10.0, 100.0),
                   help="label fractions in percent, comma separated")
    i.add_argument("--val-frac", type=float, default=0.15)
    i.add_argument("--test-frac", type=float, default=0.15)
    i.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    i.add_argument("--force", action="store_true", help="rebuild even if the store is up to date")
    _common(i)
    from data_prep import sharding
    sharding.add_shard_argument(f)
    sharding.add_shard_argument(i)
    sharding.add_merge_parser(sub)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true", help="exit non-zero if any input was skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _report_skips(skipped: list[dict], limit: int = 50) -> None:
    for s in skipped[:limit]:
        where = s.get("file", "?") + (f" (line {s['line']})" if "line" in s else "")
        print(f"  skipped {where}: {s['reason']}", file=sys.stderr)
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more (see manifest.json 'skipped')", file=sys.stderr)


def run_frames(args: argparse.Namespace) -> int:
    from data_prep import frames
    st = frames.FrameSettings(size=args.size, stride=args.stride, crop=args.crop, fan_frames=args.fan_frames,
                              dedup_threshold=args.dedup_threshold, patient_pattern=args.patient_pattern,
                              doppler=args.doppler, mm_per_pixel=args.mm_per_pixel, stride_ms=args.stride_ms)
    if args.size < 8 or args.stride < 1 or args.fan_frames < 1:
        print("prepare frames: need --size >= 8, --stride >= 1, --fan-frames >= 1", file=sys.stderr)
        return errors.USAGE
    if (args.mm_per_pixel is not None and not args.mm_per_pixel > 0) or \
            (args.stride_ms is not None and not args.stride_ms > 0):
        print("prepare frames: --mm-per-pixel and --stride-ms must be > 0", file=sys.stderr)
        return errors.USAGE
    if args.shard:
        from data_prep import sharding
        return sharding.run_frames_shard(args, st)
    try:
        res = frames.build(args.src, args.out, st, workers=args.workers, threads=args.threads, salt=args.salt,
                           overwrite=args.overwrite, progress=not args.quiet)
    except (frames.StoreBusy, frames.SettingsMismatch, FileNotFoundError, NotADirectoryError) as e:
        print(f"prepare frames: {e}", file=sys.stderr)
        return errors.USAGE
    except OSError as e:  # disk full, permissions: the message says what was kept
        print(f"prepare frames: {e}", file=sys.stderr)
        return errors.WRITE_FAILED
    m = res.manifest
    print(f"frame store {args.out}: {m['num_frames']} frames, {m['num_videos']} videos, {m['num_patients']} patients "
          f"from {m['num_sources']} sources ({res.converted} converted now, {res.reused} already done, "
          f"{m['num_skipped_sources']} skipped)")
    for w in m["warnings"]:
        print(f"  warning: {w}", file=sys.stderr)
    _report_skips(m["skipped"])
    if m["num_frames"] == 0:
        print("prepare frames: no frames written (no usable media under --src)", file=sys.stderr)
        return errors.USAGE
    return 1 if args.strict and m["skipped"] else 0


def run_images(args: argparse.Namespace) -> int:
    from fetal_ssl_jax.data import labelled_builder as images
    from fetal_ssl_jax.errors import WorkdirBusy
    if not os.path.isfile(args.csv):
        print(f"prepare images: no such CSV {args.csv}", file=sys.stderr)
        return errors.USAGE
    st = images.ImageSettings(size=args.size, crop=args.crop, classes=tuple(args.classes), val_frac=args.val_frac,
                              test_frac=args.test_frac, seeds=tuple(args.seed),
                              split_seed=args.seed[0] if args.split_seed is None else args.split_seed,
                              fractions=tuple(args.fractions))
    root = args.root or os.path.dirname(os.path.abspath(args.csv))
    if args.shard:
        from data_prep import sharding
        return sharding.run_images_shard(args, st, root)
    try:
        m, rebuilt = images.build(args.csv, root, args.out, st, workers=args.workers, progress=not args.quiet,
                                  force=args.force)
    except (ValueError, WorkdirBusy) as e:
        print(f"prepare images: {e}", file=sys.stderr)
        return errors.USAGE
    except OSError as e:  # disk full, permissions: the message says what was kept
        print(f"prepare images: {e}", file=sys.stderr)
        return errors.WRITE_FAILED
    n = m["num_images"]
    print(f"labelled store {args.out}{'' if rebuilt else ' (up to date)'}: train {n['train']}, val {n['val']}, "
          f"test {n['test']} images; patients {m['num_patients']}; {len(m['skipped'])} rows skipped")
    for w in m["warnings"]:
        print(f"  warning: {w}", file=sys.stderr)
    _report_skips(m["skipped"])
    return 1 if args.strict and m["skipped"] else 0


def run(args: argparse.Namespace, overrides: list[str] | None = None) -> int:
    if args.what == "merge":
        from data_prep import sharding
        return sharding.run_merge(args)
    return run_frames(args) if args.what == "frames" else run_images(args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.cli")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
