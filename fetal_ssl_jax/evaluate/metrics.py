"""Classification metrics of the evaluation protocol, in NumPy, matching scikit-learn's definitions.

Written out (not sklearn calls) so the numbers do not depend on sklearn's version or its
warning/zero-division defaults; tests pin them against sklearn on fixed predictions.
Macro-F1 averages over the classes present in the true or predicted labels (sklearn's
default), so a class missing from a small test split does not count as an F1 of 0.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[K, K] int64 counts; rows = true class, columns = predicted class (sklearn's layout)."""
    y_true = np.asarray(y_true, np.int64).ravel()
    y_pred = np.asarray(y_pred, np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.shape[0]} labels but {y_pred.shape[0]} predictions")
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per class; 0 where precision and recall are both undefined or zero (sklearn zero_division=0)."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)  # 2TP + FP + FN
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def summarize(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """The per-split block of metrics.json: macro_f1, accuracy, balanced_accuracy, per_class_f1, confusion_matrix."""
    k = len(classes)
    cm = confusion_matrix(y_true, y_pred, k)
    n = int(cm.sum())
    present = (cm.sum(0) + cm.sum(1)) > 0          # in y_true or y_pred: sklearn's label set
    in_true = cm.sum(1) > 0                         # balanced accuracy: recall over true classes
    f1 = per_class_f1(cm)
    recall = np.diag(cm) / np.maximum(cm.sum(1), 1)
    return {
        "num_samples": n,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "accuracy": float(np.trace(cm) / n) if n else 0.0,
        "balanced_accuracy": float(recall[in_true].mean()) if in_true.any() else 0.0,
        "per_class_f1": {c: (float(f1[i]) if present[i] else None) for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
    }


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Model-selection criterion (validation macro-F1)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    present = (cm.sum(0) + cm.sum(1)) > 0
    return float(per_class_f1(cm)[present].mean()) if present.any() else 0.0


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights of the subset actually used: N / (K_present * n_c); 0 for absent classes.

    Same as sklearn's ``compute_class_weight('balanced')`` on the present classes.
    """
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("class weights of an empty label set")
    w = np.zeros(num_classes, np.float64)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w.astype(np.float32)
