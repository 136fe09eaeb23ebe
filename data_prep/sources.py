"""Finding the sources under an export folder, and naming their patients.

A source is one media file, or one folder of numbered still images (a PNG
sequence). Everything else (sidecar JSON, CSV, notes, hidden files) is ignored
quietly. Sources are sorted by their path relative to the export root, which fixes
the order of the store whatever the number of workers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re

from data_prep import readers


@dataclasses.dataclass(frozen=True)
class Source:
    rel: str                     # posix path relative to the export root (a folder for sequences)
    path: str                    # absolute path (file, or folder for a sequence)
    kind: str                    # video | dicom | hdf5 | sequence
    size: int                    # bytes (sum over files for a sequence)
    mtime_ns: int                # newest modification time
    files: tuple[str, ...] = ()  # sequence members, relative to ``path``

    @property
    def key(self) -> str:
        """Stable short name for this source's shard and done-marker."""
        return hashlib.sha1(self.rel.encode()).hexdigest()[:16]

    @property
    def video_id(self) -> str:
        stem = self.rel if self.kind == "sequence" else os.path.splitext(self.rel)[0]
        return stem.rstrip("#_-. ") or stem


def discover(root: str) -> tuple[list[Source], list[dict]]:
    """(sources sorted by rel path, notes about images that form no sequence)."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--src {root}: not a folder")
    out: list[Source] = []
    notes: list[dict] = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        rel_d = os.path.relpath(d, root).replace(os.sep, "/")
        rel_d = "" if rel_d == "." else rel_d
        groups: dict[str, list[str]] = {}
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = os.path.join(d, name)
            kind = readers.kind_of(p)
            if kind is None:
                continue
            if kind == "image":
                groups.setdefault(readers.sequence_prefix(name), []).append(name)
                continue
            st = os.stat(p)
            out.append(Source(f"{rel_d}/{name}" if rel_d else name, p, kind, st.st_size, st.st_mtime_ns))
        seqs = {k: v for k, v in groups.items() if len(v) >= 2}
        loose = sum(len(v) for k, v in groups.items() if len(v) < 2)
        if loose:
            notes.append({"folder": rel_d or ".", "reason": f"{loose} still image(s) that form no numbered "
                          "sequence were not used (labelled stills belong in `prepare images`)"})
        for prefix, names in sorted(seqs.items()):
            sts = [os.stat(os.path.join(d, n)) for n in names]
            base = rel_d or os.path.basename(root)
            rel = base if len(seqs) == 1 else f"{base}/{prefix}"
            out.append(Source(rel, d, "sequence", sum(s.st_size for s in sts), max(s.st_mtime_ns for s in sts),
                              tuple(names)))
    out.sort(key=lambda s: s.rel)
    return out, notes


def hash_patient(patient_id: str, salt: str) -> str:
    """Salted hash of a DICOM PatientID: the raw identifier never reaches the store."""
    return "p-" + hashlib.sha256((salt + "\x00" + patient_id).encode()).hexdigest()[:16]


def patient_from_path(rel: str, pattern: str | None) -> str | None:
    """Patient id from a source path: the regex's 'patient' group (or group 1), else the parent folder."""
    if pattern:
        m = re.search(pattern, rel)
        if not m:
            return None
        if "patient" in m.re.groupindex:
            return m.group("patient")
        return m.group(1) if m.re.groups else m.group(0)
    parent = os.path.basename(os.path.dirname(rel))
    return parent or os.path.splitext(os.path.basename(rel))[0]


def checksum(src: Source) -> str:
    """sha256 of the file (or of the names and bytes of a sequence's files)."""
    h = hashlib.sha256()
    paths = [src.path] if src.kind != "sequence" else [os.path.join(src.path, f) for f in src.files]
    for p in paths:
        if src.kind == "sequence":
            h.update(os.path.basename(p).encode() + b"\x00")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
