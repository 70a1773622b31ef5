"""Quality metrics of a ranking model, computed on a labelled period."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def lift_top_fraction(labels: np.ndarray, scores: np.ndarray, fraction: float = 0.1) -> float:
    """Return the positive rate among the top-scored `fraction` of rows over the overall rate.

    This is what callers feel: how many more subscribers per call than dialling at random.
    """
    labels = np.asarray(labels)
    base_rate = labels.mean()
    if len(labels) == 0 or base_rate == 0:
        return float("nan")
    top = max(1, int(round(len(labels) * fraction)))
    # Stable sort so that ties keep row order and the figure is reproducible.
    order = np.argsort(-np.asarray(scores), kind="stable")[:top]
    return float(labels[order].mean() / base_rate)


def calibration_table(
    labels: np.ndarray, scores: np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """Return (mean score, actual positive rate, rows) per score decile, for a calibration plot."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    order = np.argsort(scores, kind="stable")
    return [
        (float(scores[chunk].mean()), float(labels[chunk].mean()), len(chunk))
        for chunk in np.array_split(order, bins)
        if len(chunk)
    ]


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Return ROC AUC, PR AUC, top-decile lift, Brier score and calibration gap."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    both_classes = len(np.unique(labels)) == 2
    return {
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else float("nan"),
        "pr_auc": float(average_precision_score(labels, scores)) if both_classes else float("nan"),
        "lift_top_decile": lift_top_fraction(labels, scores, 0.1),
        "brier": float(brier_score_loss(labels, scores)),
        # Mean score minus actual rate: the drift symptom that ranking metrics do not show.
        "calibration_gap": float(scores.mean() - labels.mean()),
        "positive_rate": float(labels.mean()),
        "rows": float(len(labels)),
    }
