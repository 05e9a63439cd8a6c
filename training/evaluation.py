"""Metrics for a spam model's scores against known labels (spam is the positive class)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, precision_score, recall_score, roc_auc_score
from sklearn.metrics import roc_curve

METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "mcc", "roc_auc", "n", "recall_at_fpr_0_005")


def _binary(y_true: Iterable[Any]) -> np.ndarray:
    out = []
    for v in y_true:
        if isinstance(v, str):
            v = {"spam": 1, "ham": 0}.get(v.strip().lower(), v)
        if v not in (0, 1, True, False):
            raise ValueError(f"labels must be spam/ham or 1/0, got {v!r}")
        out.append(int(v))
    return np.asarray(out, dtype=np.int64)


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, max_fpr: float = 0.005) -> float:
    """The highest spam recall reachable by some threshold that flags at most `max_fpr` of the ham."""
    if y.min() == y.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, scores)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def metrics(y_true: Iterable[Any], scores: Iterable[float], threshold: float = 0.5) -> dict[str, float]:
    """accuracy, precision, recall, f1, mcc (spam flagged when score >= threshold), roc_auc, n and
    recall_at_fpr_0_005. Threshold-free metrics are NaN when only one class is present."""
    y = _binary(y_true)
    s = np.asarray(list(scores), dtype=np.float64)
    if len(y) != len(s):
        raise ValueError("y_true and scores differ in length")
    if len(y) == 0:
        raise ValueError("no examples to evaluate")
    pred = (s >= threshold).astype(np.int64)
    both = y.min() != y.max()
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "mcc": float(matthews_corrcoef(y, pred)) if both or pred.min() != pred.max() else 0.0,
        "roc_auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "n": int(len(y)),
        "recall_at_fpr_0_005": recall_at_fpr(y, s, 0.005),
    }


def curves(y_true: Iterable[Any], scores: Iterable[float], threshold: float = 0.5, max_points: int = 60) -> dict:
    """What the console draws for a model version: precision-recall points [precision, recall, threshold] thinned
    to at most `max_points` (empty with one class only), and the confusion counts at `threshold`."""
    from sklearn.metrics import precision_recall_curve

    y = _binary(y_true)
    s = np.asarray(list(scores), dtype=np.float64)
    pred = s >= threshold
    confusion = {"tp": int((pred & (y == 1)).sum()), "fp": int((pred & (y == 0)).sum()),
                 "tn": int((~pred & (y == 0)).sum()), "fn": int((~pred & (y == 1)).sum()), "threshold": float(threshold)}
    points: list[list[float]] = []
    if len(y) and y.min() != y.max():
        precision, recall, thresholds = precision_recall_curve(y, s)
        keep = np.unique(np.linspace(0, len(thresholds) - 1, min(max_points, len(thresholds))).round().astype(int))
        points = [[round(float(precision[i]), 4), round(float(recall[i]), 4), round(float(thresholds[i]), 4)]
                  for i in keep]
        points.append([1.0, 0.0, 1.0])  # the curve's conventional end: nothing flagged
    return {"pr_curve": points, "confusion": confusion}
