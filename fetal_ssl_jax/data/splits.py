"""Patient-level splits and nested, stratified label fractions (the evaluation protocol).

Split: iterative stratification over patients (Sechidis et al. 2011, adapted to
groups): the rarest class still unassigned is placed first, each of its patients
going to the split that most lacks that class, so rare classes reach val and test
whenever the patients allow. Fractions: one seeded permutation per class, and a
fraction takes a prefix of it, which makes 1% ⊂ 10% ⊂ 100% by construction and
keeps at least one image per class.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


def split_patients(patients: Sequence[str], labels: Sequence[int], num_classes: int, val_frac: float,
                   test_frac: float, seed: int) -> dict[str, list[str]]:
    """Assigns every patient to one split; images of a patient never straddle splits."""
    if val_frac < 0 or test_frac < 0 or val_frac + test_frac >= 1:
        raise ValueError(f"need 0 <= val_frac, test_frac and val_frac + test_frac < 1; got {val_frac}, {test_frac}")
    ids = sorted(set(patients))
    pos = {p: i for i, p in enumerate(ids)}
    counts = np.zeros((len(ids), num_classes), np.int64)
    for p, y in zip(patients, labels):
        counts[pos[p], y] += 1
    fracs = np.array([1.0 - val_frac - test_frac, val_frac, test_frac])
    want_c = fracs[:, None] * counts.sum(0)[None, :]          # [split, class] images still wanted
    want = fracs * counts.sum()                                 # [split] images still wanted
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))                           # seeded tie-breaking between patients
    left = np.ones(len(ids), bool)
    assign = np.full(len(ids), -1)
    while left.any():
        remaining = counts[left].sum(0)
        nz = np.flatnonzero(remaining)
        c = int(nz[np.argmin(remaining[nz])])                   # the rarest class still unassigned
        for i in order:
            if not left[i] or counts[i, c] == 0:
                continue
            key = np.stack([want_c[:, c], want, rng.random(3)], 1)
            s = int(np.lexsort(key.T[::-1])[-1])                # most wanted for c, then overall, then random
            if fracs[s] == 0:
                s = 0
            assign[i] = s
            left[i] = False
            want_c[s] -= counts[i]
            want[s] -= counts[i].sum()
    return {name: [ids[i] for i in range(len(ids)) if assign[i] == k] for k, name in enumerate(SPLITS)}


def nested_fractions(labels: Sequence[int], percents: Sequence[float], seed: int,
                     num_classes: int) -> dict[str, list[int]]:
    """Per percent, sorted indices into ``labels``: nested, stratified, >= 1 per present class."""
    y = np.asarray(labels, np.int64)
    rng = np.random.default_rng([seed, 0x5F4])
    perms = {c: rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)}
    out: dict[str, list[int]] = {}
    for p in sorted(float(x) for x in percents):
        if not 0 < p <= 100:
            raise ValueError(f"label fraction {p}% is not in (0, 100]")
        take = []
        for c in range(num_classes):
            idx = perms[c]
            k = len(idx) if p >= 100 else min(len(idx), max(1, int(round(p / 100.0 * len(idx)))))
            take.append(idx[:k])
        key = str(int(p)) if p == int(p) else repr(p)
        out[key] = sorted(int(i) for i in np.concatenate(take)) if take else []
    return out
