"""Scoring: batched prediction and the metrics every model is reported with (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics

from .config import CLASS_NAMES


def predict_surface_probability(model, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """P(Surface) for each image, in large batches (never one ``predict`` call per image)."""
    probabilities = model.predict(images.astype("float32", copy=False), batch_size=batch_size, verbose=0)
    return np.asarray(probabilities, dtype="float64")[:, 1]


def binary_metrics(y_true: np.ndarray, p_surface: np.ndarray, *, threshold: float = 0.5) -> dict[str, object]:
    """Accuracy, balanced accuracy, macro F1, ROC-AUC, confusion matrix and n for one split."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = (np.asarray(p_surface) >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "n": int(len(y_true)),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(metrics.f1_score(y_true, y_pred, average="macro", labels=[0, 1], zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(y_true, p_surface)) if both_classes else None,
        "surface_share": float(y_true.mean()) if len(y_true) else None,
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        "threshold": threshold,
    }


def majority_baseline(y_eval: np.ndarray) -> dict[str, object]:
    """Scores of always answering the evaluated split's most common label (a reference row)."""
    majority = int(np.bincount(np.asarray(y_eval).astype(int), minlength=2).argmax())
    scores = binary_metrics(y_eval, np.full(len(y_eval), float(majority)))
    scores["answer"] = CLASS_NAMES[majority]
    return scores
