"""The unlabelled frame store: the schema the SSL engine reads and data_prep writes.

Layout of a store directory::

    manifest.json                 {"schema": "fetal-frames/1", "shards": [...], "videos": [...], ...}
    frames-00000.array_record     records (msgpack): image, h, w, video_id, patient_id, frame_index

Records of one video are contiguous and in frame order; ``manifest["videos"]`` gives
each video's global record range ``[start, start + count)`` over the shards in
manifest order, which is what temporal positives sample from. Other manifest keys
(settings, checksums, skipped files) belong to whoever writes the store.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from fetal_ssl_jax.data import records

SCHEMA = "fetal-frames/1"
MANIFEST = "manifest.json"


def frame_record(frame: np.ndarray, video_id: str, patient_id: str, frame_index: int) -> dict[str, Any]:
    rec = records.encode_image(frame)
    rec.update(video_id=str(video_id), patient_id=str(patient_id), frame_index=int(frame_index))
    return rec


def write_manifest(store: str, manifest: dict[str, Any]) -> None:
    """Atomic write, so a killed run never leaves a half manifest."""
    manifest = dict(manifest)
    manifest.setdefault("schema", SCHEMA)
    tmp = os.path.join(store, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(store, MANIFEST))


def read_manifest(store: str) -> dict[str, Any]:
    from fetal_ssl_jax.object_storage import require_file_path
    require_file_path(store, "frame store")
    path = os.path.join(store, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{store}: no {MANIFEST}; is this a frame store (launch.py prepare frames)?")
    with open(path) as f:
        m = json.load(f)
    if m.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {m.get('schema')!r}, expected {SCHEMA!r}")
    return m


class FrameStoreWriter:
    """Appends whole videos to sharded ArrayRecord files and keeps the manifest's index.

    One shard is closed after ``frames_per_shard`` records (at a video boundary), so a
    store of any size streams with bounded memory.
    """

    def __init__(self, store: str, frames_per_shard: int = 4096, manifest_extra: dict | None = None):
        os.makedirs(store, exist_ok=True)
        self.store = store
        self.frames_per_shard = frames_per_shard
        self.shards: list[str] = []
        self.videos: list[dict[str, Any]] = []
        self.total = 0
        self.extra = dict(manifest_extra or {})
        self._writer: records.RecordWriter | None = None

    def _ensure_writer(self) -> records.RecordWriter:
        if self._writer is None:
            name = f"frames-{len(self.shards):05d}.array_record"
            self._writer = records.RecordWriter(os.path.join(self.store, name))
            self.shards.append(name)
        return self._writer

    def add_video(self, video_id: str, patient_id: str, frames, frame_indices=None, **meta) -> int:
        """Writes an iterable of uint8 [H, W] frames; returns how many were written."""
        w = self._ensure_writer()
        start, n = self.total, 0
        for i, fr in enumerate(frames):
            idx = i if frame_indices is None else frame_indices[i]
            w.write(frame_record(fr, video_id, patient_id, idx))
            n += 1
        self.total += n
        self.videos.append(dict(video_id=str(video_id), patient_id=str(patient_id), start=start, count=n,
                                shard=self.shards[-1], **meta))
        if w.count >= self.frames_per_shard:
            w.close()
            self._writer = None
        return n

    def close(self) -> dict[str, Any]:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        manifest = dict(self.extra, schema=SCHEMA, shards=self.shards, videos=self.videos,
                        num_frames=self.total, num_videos=len(self.videos),
                        num_patients=len({v["patient_id"] for v in self.videos}))
        write_manifest(self.store, manifest)
        return manifest


@dataclasses.dataclass
class FrameStore:
    """Read side: a grain random-access source over all shards plus the video index."""

    path: str
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str) -> "FrameStore":
        return cls(path, read_manifest(path))

    def source(self) -> "grain.sources.ArrayRecordDataSource":
        import grain  # lazy: the data_prep writers and their worker processes never need JAX

        return grain.sources.ArrayRecordDataSource([os.path.join(self.path, s) for s in self.manifest["shards"]])

    def __len__(self) -> int:
        return int(self.manifest["num_frames"])

    def video_ranges(self) -> np.ndarray:
        """[num_frames, 2] int64: for each record, (start, end) of the video it belongs to."""
        out = np.zeros((len(self), 2), np.int64)
        for v in self.manifest["videos"]:
            out[v["start"]:v["start"] + v["count"]] = (v["start"], v["start"] + v["count"])
        return out


def decode_frame(data: bytes) -> dict[str, Any]:
    rec = records.unpack(data)
    rec["image"] = records.decode_image(rec)
    return rec
