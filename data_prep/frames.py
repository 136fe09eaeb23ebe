"""Builds the unlabelled frame store from an export folder (``launch.py prepare frames``).

Resumable by construction: each source is converted, in a worker process, into its
own shard ``frames-<key>.array_record`` (written under a temporary name, then
renamed) and only then marked done by ``parts/<key>.json``. A rerun reuses every
done source whose size, mtime and settings match, and the manifest is assembled
from the done-markers in sorted source order. So a run killed at any point and
rerun gives the same bytes as an uninterrupted run, with any number of workers.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import glob
import hashlib
import json
import multiprocessing as mp
import os
import secrets
import sys
import time
from typing import Any, Iterator

import numpy as np
from scipy import ndimage

from fetal_ssl_jax.workdir_lock import WorkdirLock
from data_prep import readers, sources
from fetal_ssl_jax.data import fan as fan_lib
from fetal_ssl_jax.data import records, resize
from fetal_ssl_jax.data.frame_store import SCHEMA, frame_record, write_manifest
from fetal_ssl_jax.errors import WorkdirBusy, WriteFailed, is_disk_full, reason

BUILDER = "data_prep.frames/1"
# snappy: ~8x cheaper to write than the default codec for speckle frames, faster to read, ~20% larger
SHARD_OPTIONS = records.WRITER_OPTIONS + ",snappy"
PARTS = "parts"


@dataclasses.dataclass(frozen=True)
class FrameSettings:
    """Everything that changes the output; a store is only ever extended with equal settings."""

    size: int = 256
    stride: int = 5
    crop: str = "fan"                 # fan | none
    fan_frames: int = 32              # frames buffered to find the fan (bounds memory)
    dedup_threshold: float = 1.0      # mean |difference| (grey levels) under which a frame is a duplicate
    blank_threshold: int = 8          # a frame whose max is below this is blank
    patient_pattern: str | None = None
    salt_sha256: str = ""             # fingerprint of the patient-id salt, never the salt
    doppler: str = "keep-grey"        # colour-flow frames: keep-grey (overlay blanked) | skip | as-is
    mm_per_pixel: float | None = None  # resample calibrated DICOM to this many mm per output pixel
    stride_ms: float | None = None    # per-video stride from its frame timing, so every video samples alike

    def __post_init__(self):
        if self.doppler not in DOPPLER_MODES:
            raise ValueError(f"doppler must be one of {', '.join(DOPPLER_MODES)}, got {self.doppler!r}")

    def digest(self) -> str:
        d = dataclasses.asdict(self)
        for k, v in _ADDED_LATER.items():  # absent at their default: stores built before them still match
            if d[k] == v:
                del d[k]
        blob = json.dumps(dict(d, builder=BUILDER), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_ADDED_LATER = {"doppler": "keep-grey", "mm_per_pixel": None, "stride_ms": None}
DOPPLER_MODES = ("keep-grey", "skip", "as-is")
DOPPLER_MIN_FRACTION = 0.005  # colour-flow pixels in the fan (of its area) that make a frame a Doppler frame


# ---------------------------------------------------------------- one source (runs in a worker)

def _atomic_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _layout_for(frames: list[np.ndarray], clip: readers.Clip,
                st: FrameSettings) -> tuple[resize.Layout, dict, fan_lib.Fan, list | None]:
    """Crop (calibrated region, else detected fan), scale, and the output's mm per pixel (None = unknown)."""
    h, w = frames[0].shape
    region = clip.meta.get("region")
    if st.crop == "none":
        fan = fan_lib.full_frame(h, w)
    elif region and region["bbox"][1] <= h and region["bbox"][3] <= w:
        fan = fan_lib.Fan(tuple(region["bbox"]), None, "region")
    else:
        if clip.lut is not None:  # limited-range video: black is 16 until mapped
            frames = [clip.lut[f] for f in frames]
        fan = fan_lib.detect_fan(frames)
    src_mm = region.get("mm_per_pixel") if region else None
    scale, out_mm = None, None
    if src_mm and st.mm_per_pixel:
        scale, out_mm = (src_mm[0] / st.mm_per_pixel, src_mm[1] / st.mm_per_pixel), [st.mm_per_pixel] * 2
    elif src_mm:
        y0, y1, x0, x1 = fan.bbox
        s = st.size / max(y1 - y0, x1 - x0)
        out_mm = [round(src_mm[0] / s, 6), round(src_mm[1] / s, 6)]
    return resize.plan(fan, st.size, clip.lut, scale), fan.describe(), fan, out_mm


def _is_doppler(col: np.ndarray | None, fan: fan_lib.Fan) -> bool:
    """Colour-flow pixels cover at least DOPPLER_MIN_FRACTION of the fan (colour bars and logos lie outside)."""
    if col is None:
        return False
    y0, y1, x0, x1 = fan.bbox
    sub = col[y0:y1, x0:x1]
    area = (y1 - y0) * (x1 - x0)
    if fan.mask is not None:
        sub = sub & fan.mask
        area = int(fan.mask.sum())
    return int(sub.sum()) >= max(16, DOPPLER_MIN_FRACTION * area)


def clip_stride(clip: readers.Clip, st: FrameSettings) -> tuple[int, str | None]:
    """The clip's frame stride: from --stride-ms and its frame timing, else --stride (with the reason)."""
    if not st.stride_ms:
        return st.stride, None
    t = clip.meta.get("timing")
    if not t:
        return st.stride, (f"no frame timing (DICOM FrameTime/FrameTimeVector/CineRate or container rate): "
                           f"--stride-ms {st.stride_ms:g} not applied, --stride {st.stride} used")
    return max(1, int(round(st.stride_ms / t["frame_time_ms"]))), None


def iter_clip(clip: readers.Clip, st: FrameSettings, info: dict,
              stride: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Streams one clip through fan detection, crop/resize, Doppler, blank and duplicate dropping.

    Yields (source frame index, uint8 [size, size]); fills ``info`` with the clip's
    statistics when exhausted. Only the first ``fan_frames`` frames are ever held.
    """
    stride = stride or st.stride
    stats = {"decoded": 0, "blank": 0, "duplicate": 0, "written": 0, "doppler": 0, "doppler_dropped": 0}
    prefix: list[tuple[int, np.ndarray, np.ndarray | None]] = []
    layout: resize.Layout | None = None
    fan: fan_lib.Fan | None = None
    fan_info: dict = {}
    out_mm: list | None = None
    shape: tuple[int, int] | None = None
    prev: np.ndarray | None = None

    def keep(fr: np.ndarray, col: np.ndarray | None) -> np.ndarray | None:
        nonlocal prev
        if _is_doppler(col, fan):
            stats["doppler"] += 1
            if st.doppler == "skip":
                stats["doppler_dropped"] += 1
                return None
            if st.doppler == "keep-grey":  # flow is blood, which B-mode shows black; 1 px more for the colour fringe
                fr = np.where(ndimage.binary_dilation(col), np.uint8(0), fr)
        out = layout.apply(fr)
        if int(out.max()) < st.blank_threshold:
            stats["blank"] += 1
            return None
        if prev is not None and st.dedup_threshold > 0 and \
                np.abs(out.astype(np.int16) - prev).mean() < st.dedup_threshold:
            stats["duplicate"] += 1
            return None
        prev = out
        stats["written"] += 1
        return out

    def flush() -> Iterator[tuple[int, np.ndarray]]:
        for i, f, c in prefix:
            out = keep(f, c)
            if out is not None:
                yield i, out

    for idx, fr in clip.frames(stride):
        col = clip.colour  # set by the reader for the frame it just yielded
        stats["decoded"] += 1
        if shape is None:
            shape = fr.shape
        elif fr.shape != shape:
            raise readers.BadSource(f"frame size changed mid-clip from {shape} to {fr.shape} at frame {idx}")
        if layout is None:
            prefix.append((idx, np.array(fr, copy=True), col))
            if len(prefix) >= st.fan_frames:
                layout, fan_info, fan, out_mm = _layout_for([f for _, f, _ in prefix], clip, st)
                yield from flush()
                prefix = []
        else:
            out = keep(fr, col)
            if out is not None:
                yield idx, out
    if layout is None and prefix:
        layout, fan_info, fan, out_mm = _layout_for([f for _, f, _ in prefix], clip, st)
        yield from flush()
    if stats["decoded"] == 0:
        raise readers.BadSource("zero frames")
    region = clip.meta.get("region")
    info.update({"count": stats["written"], "source_frames": clip.num_frames, "sampled": stats["decoded"],
                 "dropped_blank": stats["blank"], "dropped_duplicate": stats["duplicate"],
                 "doppler_frames": stats["doppler"], "dropped_doppler": stats["doppler_dropped"],
                 "stride": stride, "timing": clip.meta.get("timing"), "mm_per_pixel": out_mm,
                 "source_mm_per_pixel": region.get("mm_per_pixel") if region else None,
                 "source_shape": list(shape), "fan": fan_info, **({"dataset": clip.name} if clip.name else {})})


def _convert_clip(clip: readers.Clip, st: FrameSettings, video_id: str, patient_id: str,
                  w: records.RecordWriter, stride: int | None = None) -> dict:
    info: dict = {"video_id": video_id, "patient_id": patient_id}
    for idx, out in iter_clip(clip, st, info, stride):
        w.write(frame_record(out, video_id, patient_id, idx))
    return info


def convert_source(task: dict) -> dict:
    """Worker entry: one source -> its shard + done-marker. Never raises for a bad file."""
    src: sources.Source = task["source"]
    st: FrameSettings = task["settings"]
    out: str = task["out"]
    part = {"source": src.rel, "kind": src.kind, "bytes": src.size, "mtime_ns": src.mtime_ns,
            "settings": st.digest(), "key": src.key, "videos": [], "bad_files": [], "warnings": []}
    shard = f"frames-{src.key}.array_record"
    writer: records.RecordWriter | None = None
    try:
        part["sha256"] = sources.checksum(src)
        clips = readers.open_source(src.path, src.kind, threads=task.get("threads", 1), seq_files=list(src.files),
                                    on_bad=lambda f, r: part["bad_files"].append(
                                        {"file": f"{src.rel}/{f}", "reason": r}))
        writer = records.RecordWriter(os.path.join(out, shard), tmp_suffix=f".tmp.{os.getpid()}",
                                        options=SHARD_OPTIONS)
        for clip in clips:
            pid = patient_id_for(src, clip, st, task.get("salt", ""))
            vid = src.video_id + (f"/{clip.name.strip('/')}" if clip.name else "")
            stride, why = clip_stride(clip, st)
            info = _convert_clip(clip, st, vid, pid, writer, stride)
            part["warnings"].extend(f"{src.rel}: {w}" for w in clip.meta.get("warnings", []) + [why] if w)
            if st.mm_per_pixel and not info["source_mm_per_pixel"]:
                part["warnings"].append(f"{src.rel}: no physical calibration (Ultrasound Region Calibration in cm): "
                                        f"not resampled to --mm-per-pixel {st.mm_per_pixel:g}, fitted to --size")
            if clip.num_frames and info["sampled"] < -(-clip.num_frames // stride) and src.kind == "video":
                part["warnings"].append(f"{vid}: container says {clip.num_frames} frames, decoded fewer "
                                        f"({info['sampled']} sampled at stride {stride}); file may be truncated")
            part["videos"].append(info)
        if writer.count == 0:
            why = ", or colour Doppler dropped by --doppler skip" if st.doppler == "skip" else ""
            raise readers.BadSource(f"no usable frames (all blank, duplicate or unreadable{why})")
        writer.close()
        part.update(status="done", shard=shard, frames=writer.count)
    except readers.BadSource as e:
        part.update(status="skipped", reason=str(e), shard=None, frames=0, videos=[])
    except MemoryError:
        part.update(status="skipped", reason="out of memory while decoding", shard=None, frames=0, videos=[])
    except Exception as e:  # a decoder bug must not stop the whole export
        if is_disk_full(e):  # the store's disk, not the source: no done-marker, so a rerun converts it
            part.update(status="failed", reason=f"could not write {shard}: {reason(e)}", shard=None, frames=0,
                        videos=[])
        else:
            part.update(status="skipped", reason=f"{type(e).__name__}: {e}", shard=None, frames=0, videos=[])
    finally:
        if writer is not None and part.get("status") != "done":
            writer.abort()
    if part["status"] != "failed":
        _atomic_json(os.path.join(out, PARTS, f"{src.key}.json"), part)
    return part


def patient_id_for(src: sources.Source, clip: readers.Clip, st: FrameSettings, salt: str) -> str:
    if st.patient_pattern is None and clip.patient_hint:
        return sources.hash_patient(clip.patient_hint, salt)
    pid = sources.patient_from_path(src.rel, st.patient_pattern)
    if pid is None:
        raise readers.BadSource(f"path does not match --patient-pattern {st.patient_pattern!r}")
    return pid


# ---------------------------------------------------------------- the whole store (main process)

class StoreBusy(RuntimeError):
    pass


class SettingsMismatch(RuntimeError):
    pass


def _lock(out: str) -> WorkdirLock:
    try:
        return WorkdirLock(out, "prepare frames").acquire()
    except WorkdirBusy as e:
        raise StoreBusy(str(e)) from None


def resolve_salt(out: str, salt: str | None) -> str:
    """The salt for hashing DICOM PatientIDs: given, or kept private beside the store (never in the manifest)."""
    if salt:
        return salt
    path = os.path.join(out, "patient_salt")
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    salt = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(salt)
    return salt


def _load_part(out: str, src: sources.Source) -> dict | None:
    p = os.path.join(out, PARTS, f"{src.key}.json")
    if not os.path.exists(p):
        return None
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _is_fresh(part: dict | None, src: sources.Source, digest: str, out: str) -> bool:
    if part is None or part.get("source") != src.rel:
        return False
    if part.get("bytes") != src.size or part.get("mtime_ns") != src.mtime_ns or part.get("settings") != digest:
        return False
    return part.get("status") == "skipped" or os.path.exists(os.path.join(out, part["shard"]))


def _clean_tmp(out: str) -> None:
    for p in glob.glob(os.path.join(out, "*.tmp*")) + glob.glob(os.path.join(out, PARTS, "*.tmp*")):
        try:
            os.remove(p)
        except OSError:
            pass


SOURCES_PER_WORKER = 64  # a worker process is replaced after this many sources (decoder memory does not pile up)


def _run_pending(tasks: list[dict], workers: int, progress) -> Iterator[dict]:
    """Yields parts as sources finish; a worker that crashes hard is retried alone, then reported."""
    if workers <= 0:
        for t in tasks:
            yield convert_source(t)
        return
    ctx = mp.get_context("spawn")  # no fork: the parent may hold JAX/threads
    retry: list[dict] = []
    per_child = SOURCES_PER_WORKER
    # CPython's pool hangs once its only worker is recycled (max_tasks_per_child with max_workers=1: stuck
    # at 64 of 128 sources), so one worker gets a fresh pool per batch of sources instead.
    batches = [tasks] if workers > 1 else [tasks[i:i + per_child] for i in range(0, len(tasks), per_child)]
    for batch in batches:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                    max_tasks_per_child=per_child if workers > 1 else None) as ex:
            futs = {ex.submit(convert_source, t): t for t in batch}
            for fut in cf.as_completed(futs):
                try:
                    yield fut.result()
                except cf.process.BrokenProcessPool:
                    retry.append(futs[fut])
    for t in retry:  # find the culprit: one at a time in a fresh worker
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            try:
                yield ex.submit(convert_source, t).result()
            except cf.process.BrokenProcessPool:
                src = t["source"]
                part = {"source": src.rel, "kind": src.kind, "bytes": src.size, "mtime_ns": src.mtime_ns,
                        "settings": t["settings"].digest(), "key": src.key, "status": "skipped", "shard": None,
                        "frames": 0, "videos": [], "bad_files": [], "warnings": [],
                        "reason": "the decoder crashed the worker process"}
                _atomic_json(os.path.join(t["out"], PARTS, f"{src.key}.json"), part)
                yield part


def assemble_manifest(out: str, srcs: list[sources.Source], parts: dict[str, dict], st: FrameSettings,
                      notes: list[dict]) -> dict:
    """Global record ranges over the shards in sorted source order; no timestamps (reruns are identical)."""
    shards, videos, skipped, warnings, table = [], [], [], [], []
    patients: dict[str, dict[str, int]] = {}
    start = 0
    for src in srcs:
        p = parts[src.rel]
        table.append({"source": src.rel, "kind": src.kind, "bytes": src.size, "sha256": p.get("sha256"),
                      "status": p["status"], "shard": p.get("shard"), "frames": p.get("frames", 0)})
        skipped.extend(p.get("bad_files", []))
        warnings.extend(p.get("warnings", []))
        if p["status"] != "done":
            skipped.append({"file": src.rel, "reason": p.get("reason", "unknown")})
            continue
        shards.append(p["shard"])
        for v in p["videos"]:
            videos.append(dict(v, start=start, shard=p["shard"], source=src.rel))
            start += v["count"]
            pp = patients.setdefault(v["patient_id"], {"videos": 0, "frames": 0})
            pp["videos"] += 1
            pp["frames"] += v["count"]
    return {
        "schema": SCHEMA, "builder": BUILDER, "complete": True,
        "shards": shards, "videos": videos, "num_frames": start, "num_videos": len(videos),
        "num_patients": len(patients), "patients": dict(sorted(patients.items())),
        "frame_shape": [st.size, st.size], "dtype": "uint8",
        "settings": dict(dataclasses.asdict(st), digest=st.digest()),
        "sources": table, "num_sources": len(srcs),
        "num_skipped_sources": sum(1 for t in table if t["status"] != "done"),
        "skipped": skipped, "warnings": warnings, "notes": notes,
    }


@dataclasses.dataclass
class BuildResult:
    manifest: dict
    converted: int
    reused: int


def build(src_dir: str, out: str, settings: FrameSettings | None = None, workers: int = 2, threads: int = 1,
          salt: str | None = None, overwrite: bool = False, progress: bool = True) -> BuildResult:
    """Converts (or finishes converting) every source under ``src_dir`` into the store ``out``."""
    from tqdm import tqdm

    os.makedirs(os.path.join(out, PARTS), exist_ok=True)
    lock = _lock(out)
    try:
        if overwrite:
            for p in glob.glob(os.path.join(out, "frames-*.array_record")) + \
                    glob.glob(os.path.join(out, PARTS, "*.json")) + [os.path.join(out, "manifest.json")]:
                if os.path.exists(p):
                    os.remove(p)
        _clean_tmp(out)
        salt = resolve_salt(out, salt)
        st = dataclasses.replace(settings or FrameSettings(), salt_sha256=hashlib.sha256(salt.encode()).hexdigest())
        digest = st.digest()
        srcs, notes = sources.discover(src_dir)
        parts: dict[str, dict] = {}
        pending: list[sources.Source] = []
        for s in srcs:
            part = _load_part(out, s)
            if part is not None and part.get("settings") not in (None, digest):
                raise SettingsMismatch(
                    f"{out} was built with other settings (size/stride/crop/dedup/patient/doppler/"
                    "mm-per-pixel/stride-ms options or salt); use a new --out, the same options, or --overwrite")
            if _is_fresh(part, s, digest, out):
                parts[s.rel] = part
            else:
                pending.append(s)
        tasks = [{"source": s, "settings": st, "out": out, "salt": salt, "threads": threads} for s in pending]
        bar = tqdm(total=sum(s.size for s in pending), unit="B", unit_scale=True, unit_divisor=1024,
                   desc=f"prepare frames ({len(pending)} to do, {len(parts)} done)", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        t0, nframes, nskip = time.perf_counter(), 0, 0
        by_rel = {s.rel: s for s in pending}
        with bar:
            for part in _run_pending(tasks, workers, bar):
                parts[part["source"]] = part
                nframes += part.get("frames", 0)
                nskip += part["status"] != "done"
                bar.update(by_rel[part["source"]].size)
                bar.set_postfix(frames=nframes, fps=f"{nframes / max(time.perf_counter() - t0, 1e-9):.0f}",
                                skipped=nskip, refresh=False)
        failed = [p for p in parts.values() if p["status"] == "failed"]
        if failed:
            kept = sum(1 for p in parts.values() if p["status"] != "failed")
            raise WriteFailed(f"{out}: {len(failed)} of {len(srcs)} sources could not be written "
                              f"({failed[0]['source']}: {failed[0]['reason']}); the {kept} sources done are kept "
                              "and a rerun of the same command converts only the rest. The manifest was not "
                              "updated (the store reads as it was before this run).")
        manifest = assemble_manifest(out, srcs, parts, st, notes)
        write_manifest(out, manifest)
        return BuildResult(manifest, converted=len(pending), reused=len(srcs) - len(pending))
    finally:
        lock.release()
