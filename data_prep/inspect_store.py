"""``launch.py inspect STORE``: what is in a frame or labelled store, and what it looks like.

Prints the manifest summary (counts per patient / split / class, settings, skipped
inputs) and writes a PNG contact sheet: one row per video (frames evenly spaced
through it) or one row per class (samples from the train split).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from fetal_ssl_jax.data import records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a frame store (prepare frames) or labelled store (prepare images)")
    parser.add_argument("--sheet", default=None, help="contact sheet PNG (default: STORE/contact_sheet.png)")
    parser.add_argument("--rows", type=int, default=12, help="videos (or classes) shown")
    parser.add_argument("--cols", type=int, default=8, help="frames per row")
    parser.add_argument("--thumb", type=int, default=96, help="thumbnail size in pixels")


def _read(src, i: int) -> np.ndarray:
    return records.decode_image(records.unpack(src[i]))


def _sheet(rows: list[tuple[str, list[np.ndarray]]], thumb: int, cols: int, path: str) -> None:
    from PIL import Image, ImageDraw
    label_w = 180
    sheet = Image.new("L", (label_w + cols * (thumb + 2), max(1, len(rows)) * (thumb + 2)), 32)
    draw = ImageDraw.Draw(sheet)
    for r, (label, imgs) in enumerate(rows):
        y = r * (thumb + 2)
        draw.text((4, y + thumb // 2 - 6), label[:28], fill=255)
        for c, img in enumerate(imgs[:cols]):
            sheet.paste(Image.fromarray(img).resize((thumb, thumb), Image.BILINEAR), (label_w + c * (thumb + 2), y))
    sheet.save(path)


def _frames(store: str, args) -> list[tuple[str, list[np.ndarray]]]:
    from fetal_ssl_jax.data.frame_store import FrameStore
    fs = FrameStore.open(store)
    m = fs.manifest
    print(f"frame store {store}: {m['num_frames']} frames, {m['num_videos']} videos, {m['num_patients']} patients, "
          f"shape {m.get('frame_shape')}, {len(m['shards'])} shards")
    if "settings" in m:
        print("  settings: " + json.dumps({k: v for k, v in m["settings"].items() if k != "salt_sha256"}))
    pats = m.get("patients") or {}
    for pid, p in list(pats.items())[:20]:
        print(f"  patient {pid}: {p['videos']} videos, {p['frames']} frames")
    if len(pats) > 20:
        print(f"  ... {len(pats) - 20} more patients")
    counts = [v["count"] for v in m["videos"]]
    if counts:
        print(f"  frames per video: min {min(counts)}, median {int(np.median(counts))}, max {max(counts)}")
    _print_problems(m)
    src = fs.source()
    rows = []
    vids = m["videos"]
    pick = np.linspace(0, len(vids) - 1, min(args.rows, len(vids))).round().astype(int) if vids else []
    for k in pick:
        v = vids[k]
        n = min(args.cols, v["count"])
        idx = v["start"] + np.linspace(0, v["count"] - 1, n).round().astype(int)
        rows.append((f"{v['video_id']} ({v['patient_id'][:10]})", [_read(src, int(i)) for i in idx]))
    return rows


def _planes(store: str, args) -> list[tuple[str, list[np.ndarray]]]:
    from fetal_ssl_jax.data.labelled_store import SPLITS, LabelledStore
    ls = LabelledStore.open(store)
    m = ls.manifest
    print(f"labelled store {store}: classes {ls.classes}, shape {m.get('image_shape')}")
    for s in SPLITS:
        c = m.get("counts", {}).get(s, {})
        print(f"  {s:5s}: {m.get('num_images', {}).get(s, '?')} images, {m.get('num_patients', {}).get(s, '?')} "
              f"patients; " + ", ".join(f"{k} {v}" for k, v in c.items()))
    for seed, fr in sorted(ls.fractions.items()):
        print(f"  fractions seed {seed}: " + ", ".join(f"{k}% -> {len(v)}" for k, v in
                                                     sorted(fr.items(), key=lambda kv: float(kv[0]))))
    _print_problems(m)
    rows = []
    for s in SPLITS:
        src = ls.source(s)
        labels = [records.unpack(src[i])["label"] for i in range(len(src))]
        for k, name in enumerate(ls.classes):
            idx = [i for i, y in enumerate(labels) if y == k][:args.cols]
            if idx and len(rows) < args.rows:
                rows.append((f"{name} ({s})", [_read(src, i) for i in idx]))
        if rows:
            break
    return rows


def _print_problems(m: dict) -> None:
    for w in m.get("warnings", [])[:20]:
        print(f"  warning: {w}")
    sk = m.get("skipped", [])
    if sk:
        print(f"  skipped inputs: {len(sk)}")
        for s in sk[:20]:
            print(f"    {s.get('file')}: {s.get('reason')}")


def run(args: argparse.Namespace, overrides: list[str] | None = None) -> int:
    store = args.store
    try:
        with open(os.path.join(store, "manifest.json")) as f:
            schema = json.load(f).get("schema", "")
    except (OSError, json.JSONDecodeError) as e:
        print(f"inspect: {store}: no readable manifest.json ({e})", file=sys.stderr)
        return 2
    if schema.startswith("fetal-frames"):
        rows = _frames(store, args)
    elif schema.startswith("fetal-planes"):
        rows = _planes(store, args)
    else:
        print(f"inspect: {store}: unknown schema {schema!r}", file=sys.stderr)
        return 2
    path = args.sheet or os.path.join(store, "contact_sheet.png")
    _sheet(rows, args.thumb, args.cols, path)
    print(f"contact sheet: {path}")
    return 0
