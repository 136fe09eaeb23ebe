"""Data preparation on many machines: ``prepare frames|images --shard I/N`` and ``prepare merge``.

A shard converts a deterministic 1/N of the sources, chosen by a stable hash of the
source path (``shard_of``), and records what it did in ``STORE/shards/shard-I-of-N.json``
(its done marker). ``prepare merge --out STORE`` then writes what a single-process run
writes last: the manifest (frames), or the split files, splits and fractions (images).
The merged store holds the same bytes as a single-process run on the same sources:

- frames: every source already has its own shard file and done-marker (``parts/``), so a
  shard run is the single-process builder restricted to its sources; merge assembles the
  manifest from all done-markers in sorted source order, exactly as ``frames.build`` does.
- images: a shard decodes its images into ``shards/images-I-of-N.npz``; merge reads the
  CSV again, takes every decoded image from the shard files and runs the same split and
  writing as ``images.build`` (the intermediate arrays are then deleted).

Shards of one store may run at the same time on different machines that see the same
folder (NFS, a FUSE-mounted bucket); each locks only its own shard. Every step is
idempotent: a shard whose marker exists and whose sources are unchanged is a no-op.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import json
import os
import secrets
import sys
import time
from typing import Any

import numpy as np

from fetal_ssl_jax import errors

SHARDS = "shards"


def shard_of(path: str, num_shards: int) -> int:
    """The shard (0..N-1) of a source path: a stable hash, the same on every machine and Python."""
    return int(hashlib.sha256(path.encode("utf-8")).hexdigest()[:16], 16) % num_shards


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N (e.g. 0/4), not {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= I < N")
    return i, n


def marker_path(out: str, index: int, num_shards: int) -> str:
    return os.path.join(out, SHARDS, f"shard-{index}-of-{num_shards}.json")


def _atomic_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _shard_lock(out: str, index: int, num_shards: int, what: str):
    from fetal_ssl_jax.workdir_lock import WorkdirLock
    return WorkdirLock(os.path.join(out, SHARDS, "locks", f"{index}-of-{num_shards}"), what).acquire()


def shared_salt(out: str, salt: str | None) -> str:
    """frames.resolve_salt, safe when N shards start at once: the first to link its file wins."""
    if salt:
        return salt
    path = os.path.join(out, "patient_salt")
    if not os.path.exists(path):
        tmp = f"{path}.new.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16))
        try:
            os.link(tmp, path)  # atomic: fails if another shard's salt is already there
        except FileExistsError:
            pass
        finally:
            os.remove(tmp)
    with open(path) as f:
        return f.read().strip()


# ---------------------------------------------------------------- frames

def frames_shard(src_dir: str, out: str, settings, index: int, num_shards: int, workers: int = 2, threads: int = 1,
                 salt: str | None = None, progress: bool = True) -> dict:
    """Converts the sources of shard ``index`` (as ``frames.build`` does) and writes its marker; no manifest."""
    from tqdm import tqdm
    from data_prep import frames, sources

    from fetal_ssl_jax.errors import WorkdirBusy
    os.makedirs(os.path.join(out, frames.PARTS), exist_ok=True)
    try:
        lock = _shard_lock(out, index, num_shards, f"prepare frames --shard {index}/{num_shards}")
    except WorkdirBusy as e:
        raise frames.StoreBusy(str(e)) from None
    try:
        salt = shared_salt(out, salt)
        st = dataclasses.replace(settings, salt_sha256=hashlib.sha256(salt.encode()).hexdigest())
        digest = st.digest()
        srcs, _ = sources.discover(src_dir)
        mine = [s for s in srcs if shard_of(s.rel, num_shards) == index]
        for s in mine:  # only this shard's leftovers: other shards may be writing theirs right now
            for p in glob.glob(os.path.join(out, f"frames-{s.key}.array_record.tmp*")) + \
                    glob.glob(os.path.join(out, frames.PARTS, f"{s.key}.json.tmp*")):
                try:
                    os.remove(p)
                except OSError:
                    pass
        pending, done = [], 0
        for s in mine:
            part = frames._load_part(out, s)
            if part is not None and part.get("settings") not in (None, digest):
                raise frames.SettingsMismatch(
                    f"{out} was built with other settings (size/stride/crop/dedup/patient options or salt); "
                    "use a new --out, the same options, or --overwrite")
            if frames._is_fresh(part, s, digest, out):
                done += 1
            else:
                pending.append(s)
        tasks = [{"source": s, "settings": st, "out": out, "salt": salt, "threads": threads} for s in pending]
        failed, t0 = [], time.perf_counter()
        bar = tqdm(total=len(pending), unit="src", desc=f"prepare frames shard {index}/{num_shards}",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        with bar:
            for part in frames._run_pending(tasks, workers, bar):
                if part["status"] == "failed":
                    failed.append(part)
                bar.update()
        if failed:
            raise frames.WriteFailed(f"{out}: shard {index}/{num_shards}: {len(failed)} of {len(mine)} sources could "
                                     f"not be written ({failed[0]['source']}: {failed[0]['reason']}); rerun the "
                                     "same command to convert the rest")
        marker = {"kind": "frames", "shard": index, "num_shards": num_shards, "settings": digest,
                  "src": os.path.abspath(src_dir), "sources": [s.rel for s in mine],
                  "converted": len(pending), "reused": done, "seconds": round(time.perf_counter() - t0, 2),
                  "frame_settings": dataclasses.asdict(st)}  # with the salt's fingerprint, never the salt
        _atomic_json(marker_path(out, index, num_shards), marker)
        return marker
    finally:
        lock.release()


def frames_merge(out: str, markers: list[dict]) -> dict:
    """The manifest from every source's done-marker, as the single-process builder writes it."""
    from data_prep import frames, sources
    from fetal_ssl_jax.data.frame_store import write_manifest
    first = markers[0]
    st = frames.FrameSettings(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in first["frame_settings"].items()})
    if st.digest() != first["settings"]:
        raise frames.SettingsMismatch(f"{out}: shard markers from another version of the builder; rerun the shards")
    srcs, notes = sources.discover(first["src"])
    parts, missing = {}, []
    for s in srcs:
        part = frames._load_part(out, s)
        if frames._is_fresh(part, s, st.digest(), out):
            parts[s.rel] = part
        else:
            missing.append(s.rel)
    if missing:
        raise MergeIncomplete(f"{out}: {len(missing)} sources are not converted (e.g. {missing[0]}, shard "
                              f"{shard_of(missing[0], first['num_shards'])}/{first['num_shards']}): new or changed "
                              "files since the shards ran; rerun that shard, then merge")
    lock = frames._lock(out)
    try:
        manifest = frames.assemble_manifest(out, srcs, parts, st, notes)
        write_manifest(out, manifest)
    finally:
        lock.release()
    return manifest


# ---------------------------------------------------------------- images

def images_shard(csv_path: str, root: str, out: str, st, index: int, num_shards: int, workers: int = 2,
                 progress: bool = True) -> dict:
    """Decodes the images of shard ``index`` into shards/images-I-of-N.npz and writes the marker."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from tqdm import tqdm
    from fetal_ssl_jax.data import labelled_builder as images
    os.makedirs(os.path.join(out, SHARDS), exist_ok=True)
    lock = _shard_lock(out, index, num_shards, f"prepare images --shard {index}/{num_shards}")
    try:
        csv_sha = images._sha256(csv_path)
        mpath = marker_path(out, index, num_shards)
        if os.path.exists(mpath):
            with open(mpath) as f:
                old = json.load(f)
            if old.get("csv_sha256") == csv_sha and old.get("settings") == st.digest():
                return old
        rows, _ = images.read_csv(csv_path, root, st.classes)
        mine = [r for r in rows if shard_of(r.image_path, num_shards) == index]
        tasks = [(os.path.join(root, r.image_path), st.size, st.crop) for r in mine]
        results: list = []
        with tqdm(total=len(tasks), unit="img", desc=f"prepare images shard {index}/{num_shards}",
                  disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
            if workers <= 0:
                for t in tasks:
                    results.append(images.load_image(t))
                    bar.update()
            else:
                with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
                    for res in ex.map(images.load_image, tasks, chunksize=16):
                        results.append(res)
                        bar.update()
        ok = [(r.image_path, im) for r, im in zip(mine, results) if not isinstance(im, str)]
        bad = {r.image_path: im for r, im in zip(mine, results) if isinstance(im, str)}
        arrays = os.path.join(out, SHARDS, f"images-{index}-of-{num_shards}.npz")
        tmp = arrays + f".tmp.{os.getpid()}.npz"
        stack = np.stack([im for _, im in ok]) if ok else np.zeros((0, st.size, st.size), np.uint8)
        np.savez(tmp, images=stack)
        os.replace(tmp, arrays)
        marker = {"kind": "images", "shard": index, "num_shards": num_shards, "settings": st.digest(),
                  "csv": os.path.abspath(csv_path), "root": os.path.abspath(root), "csv_sha256": csv_sha,
                  "image_settings": dataclasses.asdict(st), "decoded": [p for p, _ in ok], "failed": bad}
        _atomic_json(mpath, marker)
        return marker
    finally:
        lock.release()


def images_merge(out: str, markers: list[dict], force: bool = False) -> tuple[dict, bool]:
    """Split, fractions and split files from the shards' decoded images, as ``images.build`` writes them."""
    from fetal_ssl_jax.data import labelled_builder as images, splits
    from fetal_ssl_jax.workdir_lock import WorkdirLock
    first = markers[0]
    d = dict(first["image_settings"])
    st = images.ImageSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
    csv_path, root = first["csv"], first["root"]
    csv_sha = images._sha256(csv_path)
    old = None if force else images.up_to_date_manifest(out, csv_sha, st.digest())
    if old is not None:
        return old, False
    if any(m["csv_sha256"] != csv_sha for m in markers):
        raise MergeIncomplete(f"{csv_path} changed since the shards ran; rerun them, then merge")
    decoded: dict[str, Any] = {}
    for m in markers:
        arrays = os.path.join(out, SHARDS, f"images-{m['shard']}-of-{m['num_shards']}.npz")
        if not os.path.exists(arrays):
            raise MergeIncomplete(f"{arrays} is gone (deleted after an earlier merge?); rerun shard "
                                  f"{m['shard']}/{m['num_shards']} with the same options")
        with np.load(arrays) as z:
            stack = z["images"]
        decoded.update(zip(m["decoded"], stack))
        decoded.update(m["failed"])
    rows, bad = images.read_csv(csv_path, root, st.classes)
    num_rows = len(rows) + len(bad)
    good_rows, good_imgs = [], []
    for r in rows:
        im = decoded.get(r.image_path)
        if im is None:
            raise MergeIncomplete(f"{r.image_path} (line {r.line}) is in no shard's output; rerun shard "
                                  f"{shard_of(r.image_path, first['num_shards'])}/{first['num_shards']}")
        if isinstance(im, str):
            bad.append({"file": r.image_path, "line": r.line, "reason": im})
        else:
            good_rows.append(r)
            good_imgs.append(np.asarray(im))
    if not good_rows:
        raise ValueError(f"{csv_path}: no usable labelled images ({len(bad)} rows rejected)")
    bad.sort(key=lambda b: b["line"])
    assign = splits.split_patients([r.patient_id for r in good_rows], [r.label for r in good_rows],
                                   len(st.classes), st.val_frac, st.test_frac, st.split_seed)
    with WorkdirLock(out, "prepare images"):
        res = images._write_store(out, csv_path, csv_sha, st, good_rows, good_imgs, assign, bad, num_rows, os.path.join(out, "manifest.json"))
    for m in markers:  # the decoded copies are no longer needed; the small markers stay (idempotent reruns)
        try:
            os.remove(os.path.join(out, SHARDS, f"images-{m['shard']}-of-{m['num_shards']}.npz"))
        except OSError:
            pass
    return res


# ---------------------------------------------------------------- merge (both kinds)

class MergeIncomplete(RuntimeError):
    """A shard has not finished (or its sources changed since): rerun it, then merge."""


def load_markers(out: str) -> list[dict]:
    """All shard markers of the newest complete set (one N); raises if a shard of that N is missing."""
    paths = glob.glob(os.path.join(out, SHARDS, "shard-*-of-*.json"))
    if not paths:
        raise MergeIncomplete(f"{out}: no shard has finished (no {SHARDS}/shard-I-of-N.json)")
    by_n: dict[int, dict[int, dict]] = {}
    for p in paths:
        with open(p) as f:
            m = json.load(f)
        by_n.setdefault(int(m["num_shards"]), {})[int(m["shard"])] = (m, os.path.getmtime(p))
    n = max(by_n, key=lambda k: max(t for _, t in by_n[k].values()))  # the N of the latest shard run
    missing = [i for i in range(n) if i not in by_n[n]]
    if missing:
        raise MergeIncomplete(f"{out}: shard(s) {', '.join(f'{i}/{n}' for i in missing)} have not finished")
    markers = [by_n[n][i][0] for i in range(n)]
    if len({(m["kind"], m["settings"]) for m in markers}) != 1:
        raise MergeIncomplete(f"{out}: the {n} shards were run with different options; rerun them alike")
    return markers


def merge(out: str, force: bool = False) -> tuple[str, dict]:
    markers = load_markers(out)
    if markers[0]["kind"] == "frames":
        return "frames", frames_merge(out, markers)
    return "images", images_merge(out, markers, force)[0]


def add_merge_parser(sub) -> None:
    m = sub.add_parser("merge", help="after all --shard I/N runs: write the store's manifest (frames) or its "
                                     "splits, fractions and split files (images)")
    m.add_argument("--out", required=True, help="the store folder the shards wrote to")
    m.add_argument("--force", action="store_true", help="images: rebuild even if the store is up to date")
    m.add_argument("--strict", action="store_true", help="exit non-zero if any input was skipped")
    m.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)


def add_shard_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                   help="convert only shard I of N (a stable hash of each source path picks its shard); "
                        "run I = 0..N-1 anywhere, then `prepare merge --out STORE`")


def run_merge(args: argparse.Namespace) -> int:
    from data_prep import frames
    try:
        kind, m = merge(args.out, force=args.force)
    except (MergeIncomplete, frames.SettingsMismatch, ValueError, FileNotFoundError) as e:
        print(f"prepare merge: {e}", file=sys.stderr)
        return errors.USAGE
    except OSError as e:
        print(f"prepare merge: {e}", file=sys.stderr)
        return errors.WRITE_FAILED
    if kind == "frames":
        print(f"frame store {args.out}: {m['num_frames']} frames, {m['num_videos']} videos, {m['num_patients']} "
              f"patients from {m['num_sources']} sources ({m['num_skipped_sources']} skipped)")
    else:
        n = m["num_images"]
        print(f"labelled store {args.out}: train {n['train']}, val {n['val']}, test {n['test']} images; "
              f"{len(m['skipped'])} rows skipped")
    return 1 if args.strict and m["skipped"] else 0


def _run_reported(what: str, usage_errors: tuple[type, ...], fn):
    """``fn()``, or (None, exit code) with one line on stderr: bad input/usage -> USAGE, other OSError -> WRITE_FAILED."""
    try:
        return fn(), 0
    except usage_errors as e:
        code, msg = errors.USAGE, str(e)
    except OSError as e:
        code, msg = errors.WRITE_FAILED, str(e)
    print(f"prepare {what}: {msg}", file=sys.stderr)
    return None, code


def run_frames_shard(args: argparse.Namespace, settings) -> int:
    from data_prep import frames
    i, n = args.shard
    if args.overwrite:
        print("prepare frames: --overwrite cannot be combined with --shard (delete the store first)", file=sys.stderr)
        return errors.USAGE
    m, code = _run_reported(
        "frames", (frames.StoreBusy, frames.SettingsMismatch, FileNotFoundError, NotADirectoryError),
        lambda: frames_shard(args.src, args.out, settings, i, n, workers=args.workers, threads=args.threads,
                             salt=args.salt, progress=not args.quiet))
    if code:
        return code
    print(f"frame store {args.out}, shard {i}/{n}: {len(m['sources'])} sources ({m['converted']} converted now, "
          f"{m['reused']} already done); run `prepare merge --out {args.out}` after the last shard")
    return 0


def run_images_shard(args: argparse.Namespace, settings, root: str) -> int:
    from fetal_ssl_jax.errors import WorkdirBusy
    i, n = args.shard
    m, code = _run_reported("images", (ValueError, WorkdirBusy),
                            lambda: images_shard(args.csv, root, args.out, settings, i, n, workers=args.workers,
                                                 progress=not args.quiet))
    if code:
        return code
    print(f"labelled store {args.out}, shard {i}/{n}: {len(m['decoded'])} images decoded, {len(m['failed'])} "
          f"unreadable; run `prepare merge --out {args.out}` after the last shard")
    return 0
