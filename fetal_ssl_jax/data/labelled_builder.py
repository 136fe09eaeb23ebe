"""Builds the labelled store from labelled stills and a CSV (``launch.py prepare images``, and the
simulated store of synthetic_store.simulate_store, so both run the same conversion).

CSV columns ``image_path,class,patient_id`` (extra columns ignored; paths relative
to --root). Class names map to fixed indices from ``--classes`` whatever subset
appears. Every row that cannot be used is reported with its line and reason.
Images are decoded in worker processes, cropped to the fan like the video frames,
and written per split; split and fraction indices are saved beside them.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import re
import sys
from typing import Sequence

import numpy as np

from fetal_ssl_jax.data import fan as fan_lib
from fetal_ssl_jax.data import image_files, records, resize, splits
from fetal_ssl_jax.data.labelled_store import (DEFAULT_CLASSES, INDEX_FILES, SCHEMA, commit_staged, image_record,
                                               write_index)
from fetal_ssl_jax.errors import BadSource, WriteFailed, is_write_error, reason
from fetal_ssl_jax.workdir_lock import WorkdirLock

BUILDER = "data_prep.images/1"  # in every settings digest: kept when the builder moved, so stores stay current
MIN_SIDE = 16  # smaller stills are thumbnails or icons, not scan planes


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    size: int = 256
    crop: str = "fan"
    classes: tuple[str, ...] = DEFAULT_CLASSES
    val_frac: float = 0.15
    test_frac: float = 0.15
    split_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    fractions: tuple[float, ...] = (1, 10, 100)

    def digest(self) -> str:
        blob = json.dumps(dict(dataclasses.asdict(self), builder=BUILDER), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Row:
    line: int
    image_path: str
    label: int
    class_name: str
    patient_id: str


def read_csv(csv_path: str, root: str, classes: Sequence[str]) -> tuple[list[Row], list[dict]]:
    """Valid rows in file order, and a reason for every rejected one."""
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    rows: list[Row] = []
    bad: list[dict] = []
    seen: dict[str, Row] = {}
    try:
        _read_rows(csv_path, root, classes, lookup, rows, bad, seen)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{csv_path}: not a readable UTF-8 CSV ({type(e).__name__}: {e})") from None
    return rows, bad


def _read_rows(csv_path: str, root: str, classes: Sequence[str], lookup: dict[str, int], rows: list[Row],
               bad: list[dict], seen: dict[str, Row]) -> None:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        need = {"image_path", "class", "patient_id"}
        have = {(h or "").strip() for h in reader.fieldnames or []}
        if not need <= have:
            raise ValueError(f"{csv_path}: needs columns {sorted(need)}, has {sorted(have)}")
        for n, raw in enumerate(reader, start=2):
            r = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            path, cls, pid = r.get("image_path", ""), r.get("class", ""), r.get("patient_id", "")
            where = {"file": path or f"{os.path.basename(csv_path)}:{n}", "line": n}
            if not path:
                bad.append(dict(where, reason="empty image_path"))
            elif _outside(path):
                bad.append(dict(where, reason=f"image_path {path!r} is outside --root {root} (absolute or '..'); "
                                              "refused"))
            elif cls.lower() not in lookup:
                bad.append(dict(where, reason=f"unknown class {cls!r} (known: {', '.join(classes)})"))
            elif not pid:
                bad.append(dict(where, reason="empty patient_id"))
            elif not os.path.isfile(os.path.join(root, path)):
                bad.append(dict(where, reason=f"missing file {os.path.join(root, path)}"))
            elif path in seen:
                first = seen[path]
                same = first.label == lookup[cls.lower()] and first.patient_id == pid
                bad.append(dict(where, reason=f"duplicate of line {first.line}" +
                                ("" if same else f" with a different label/patient ({cls}, {pid})")))
            else:
                row = Row(n, path, lookup[cls.lower()], classes[lookup[cls.lower()]], pid)
                seen[path] = row
                rows.append(row)


def _outside(path: str) -> bool:
    """True for an absolute path or one that climbs out of the root with '..' (checked on the text)."""
    p = path.replace("\\", "/")
    if os.path.isabs(p) or p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        return True
    return os.path.normpath(p).replace(os.sep, "/").split("/")[0] == ".."


def load_image(task: tuple[str, int, str]) -> np.ndarray | str:
    """Worker: path -> cropped, resized uint8 [size, size], or the reason it failed."""
    path, size, crop = task
    try:
        if image_files.sniff(path) not in ("image", None):
            raise BadSource(f"wrong extension: content is {image_files.sniff(path)}, not an image")
        img = image_files.read_image(path)
        if min(img.shape) < MIN_SIDE:
            raise BadSource(f"image too small ({img.shape[1]}x{img.shape[0]} pixels; a plane image needs "
                                    f"at least {MIN_SIDE} a side)")
        fan = fan_lib.detect_still_fan(img) if crop == "fan" else fan_lib.full_frame(*img.shape)
        return resize.plan(fan, size).apply(img)
    except BadSource as e:
        return str(e)
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def up_to_date_manifest(out: str, csv_sha: str, digest: str) -> dict | None:
    """The store's manifest if it was built from these CSV bytes with these settings (and is complete)."""
    mpath = os.path.join(out, "manifest.json")
    if not os.path.exists(mpath):
        return None
    with open(mpath) as f:
        old = json.load(f)
    if old.get("csv_sha256") == csv_sha and old.get("settings", {}).get("digest") == digest \
            and all(os.path.exists(os.path.join(out, f"{s}.array_record")) for s in splits.SPLITS):
        return old
    return None


def build(csv_path: str, root: str, out: str, st: ImageSettings, workers: int = 2,
          progress: bool = True, force: bool = False) -> tuple[dict, bool]:
    """Returns (manifest, rebuilt). An up-to-date store (same CSV bytes and settings) is left as is."""
    from tqdm import tqdm

    csv_sha = _sha256(csv_path)
    old = None if force else up_to_date_manifest(out, csv_sha, st.digest())
    if old is not None:
        return old, False
    rows, bad = read_csv(csv_path, root, st.classes)
    num_rows = len(rows) + len(bad)
    tasks = [(os.path.join(root, r.image_path), st.size, st.crop) for r in rows]
    bar = tqdm(total=len(tasks), unit="img", desc="prepare images", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    images: list[np.ndarray | str] = []
    with bar:
        if workers <= 0:
            for t in tasks:
                images.append(load_image(t))
                bar.update()
        else:
            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
                for res in ex.map(load_image, tasks, chunksize=16):
                    images.append(res)
                    bar.update()
    good_rows, good_imgs = [], []
    for r, im in zip(rows, images):
        if isinstance(im, str):
            bad.append({"file": r.image_path, "line": r.line, "reason": im})
        else:
            good_rows.append(r)
            good_imgs.append(im)
    if not good_rows:
        raise ValueError(f"{csv_path}: no usable labelled images ({len(bad)} rows rejected)")
    bad.sort(key=lambda b: b["line"])
    nc = len(st.classes)
    assign = splits.split_patients([r.patient_id for r in good_rows], [r.label for r in good_rows], nc,
                                   st.val_frac, st.test_frac, st.split_seed)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file, not a directory")
    os.makedirs(out, exist_ok=True)
    with WorkdirLock(out, "prepare images"):  # one writer per store; a dead holder's lock is released
        return _write_store(out, csv_path, csv_sha, st, good_rows, good_imgs, assign, bad, num_rows, os.path.join(out, "manifest.json"))


def _write_store(out: str, csv_path: str, csv_sha: str, st: ImageSettings, good_rows: list, good_imgs: list,
                 assign: dict, bad: list, num_rows: int, mpath: str) -> tuple[dict, bool]:
    """Writes every file of the store (staged, then renamed into place); the caller holds the lock."""
    nc = len(st.classes)
    split_of = {p: s for s, ps in assign.items() for p in ps}
    # Every file is staged as '<name>.new' and renamed into place only when all are written, so a full
    # disk or a kill leaves the previous store as it was (see labelled_store.commit_staged).
    _remove_staged(out)
    try:
        counts, train_labels = _write_splits(out, good_rows, good_imgs, split_of, st.classes)
    except Exception as e:
        _remove_staged(out)
        if is_write_error(e):
            raise WriteFailed(f"could not write the labelled store {out}: {reason(e)}; "
                              + ("the previous store there is unchanged" if os.path.exists(mpath) else
                                 "nothing was written") + f". [{type(e).__name__}: {str(e)[:300]}]") from e
        raise
    fractions = {str(seed): splits.nested_fractions(train_labels, st.fractions, seed, nc) for seed in st.seeds}
    warnings = [f"split {s} has no images of class {c}" for s in splits.SPLITS for c in st.classes
                if counts[s][c] == 0 and (s == "train" or sum(counts[s].values()))]
    warnings += [f"split {s} is empty (too few patients for the requested fraction)"
                 for s in splits.SPLITS if not sum(counts[s].values()) and (st.val_frac if s == "val" else
                                                                            st.test_frac if s == "test" else 1)]
    manifest = {
        "schema": SCHEMA, "builder": BUILDER, "classes": list(st.classes),
        "image_shape": [st.size, st.size], "dtype": "uint8",
        "counts": counts, "num_images": {s: sum(counts[s].values()) for s in splits.SPLITS},
        "num_patients": {s: len(assign[s]) for s in splits.SPLITS},
        "settings": dict(dataclasses.asdict(st), digest=st.digest()),
        "csv": os.path.abspath(csv_path), "csv_sha256": csv_sha, "num_rows": num_rows,
        "skipped": bad, "warnings": warnings,
    }
    split_index = {"seed": st.split_seed, **{s: assign[s] for s in splits.SPLITS},
                   "val_frac": st.val_frac, "test_frac": st.test_frac}
    try:
        write_index(out, st.classes, split_index, fractions, manifest, suffix=STAGED)
    except Exception as e:
        _remove_staged(out)
        if is_write_error(e):
            raise WriteFailed(f"could not write the labelled store {out}: {reason(e)}; the previous store there "
                              f"is unchanged. [{type(e).__name__}: {str(e)[:300]}]") from e
        raise
    commit_staged(out, [f"{s}.array_record" for s in splits.SPLITS] + list(INDEX_FILES), STAGED)
    return manifest, True


STAGED = ".new"


def _remove_staged(out: str) -> None:
    for name in os.listdir(out):
        if name.endswith(STAGED) or STAGED + ".tmp" in name:
            try:
                os.remove(os.path.join(out, name))
            except OSError:
                pass


def _write_splits(out: str, good_rows: list[Row], good_imgs: list[np.ndarray], split_of: dict[str, str],
                  classes: Sequence[str]) -> tuple[dict[str, dict[str, int]], list[int]]:
    counts: dict[str, dict[str, int]] = {}
    train_labels: list[int] = []
    for s in splits.SPLITS:
        idx = [i for i, r in enumerate(good_rows) if split_of[r.patient_id] == s]
        with records.RecordWriter(os.path.join(out, f"{s}.array_record{STAGED}")) as w:
            for i in idx:
                r = good_rows[i]
                w.write(image_record(good_imgs[i], r.label, r.class_name, r.patient_id, r.image_path))
        counts[s] = {c: sum(1 for i in idx if good_rows[i].label == k) for k, c in enumerate(classes)}
        if s == "train":
            train_labels = [good_rows[i].label for i in idx]
    return counts, train_labels
