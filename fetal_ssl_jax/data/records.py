"""Record codec and ArrayRecord I/O shared by every store.

A record is a msgpack map of plain values; images are raw uint8 bytes plus their
shape (no PNG decode on the hot input path). ArrayRecord files are written with
``group_size:1`` so grain can read any record at random.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import msgpack
import numpy as np
from array_record.python import array_record_module as ar

WRITER_OPTIONS = "group_size:1"


def encode_image(img: np.ndarray) -> dict[str, Any]:
    """uint8 [H, W] (grayscale) -> the fields stored for an image."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 2:
        raise ValueError(f"expected a uint8 [H, W] image, got {img.dtype} {img.shape}")
    return {"image": np.ascontiguousarray(img).tobytes(), "h": int(img.shape[0]), "w": int(img.shape[1])}


def decode_image(rec: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(rec["image"], dtype=np.uint8).reshape(rec["h"], rec["w"])


def pack(rec: Mapping[str, Any]) -> bytes:
    return msgpack.packb(dict(rec), use_bin_type=True)


def unpack(data: bytes) -> dict[str, Any]:
    return msgpack.unpackb(data, raw=False)


class RecordWriter:
    """Writes packed records to one ArrayRecord file; atomic via a temp name + rename."""

    def __init__(self, path: str, tmp_suffix: str = ".tmp", options: str = WRITER_OPTIONS):
        self.path = path
        self._tmp = path + tmp_suffix  # a per-process suffix lets an orphaned writer never clash
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._w = ar.ArrayRecordWriter(self._tmp, options)
        self.count = 0

    def write(self, rec: Mapping[str, Any]) -> None:
        self._w.write(pack(rec))
        self.count += 1

    def close(self) -> None:
        try:
            self._w.close()  # a full disk often shows here, when the last chunk is flushed
        except BaseException:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)  # never leave a partial file taking the space
            raise
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._w.close()
        except Exception:  # already failing (e.g. disk full): the partial file goes anyway
            pass
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_records(path: str, records: Iterable[Mapping[str, Any]]) -> int:
    with RecordWriter(path) as w:
        for r in records:
            w.write(r)
        return w.count


def read_records(path: str) -> list[dict[str, Any]]:
    """Reads a whole (small) ArrayRecord file; for tests and tools, not the input pipeline."""
    r = ar.ArrayRecordReader(path)
    try:
        return [unpack(b) for b in r.read_all()]
    finally:
        r.close()
