"""Prequential quality: each window scored before any model learnt from it, then compared."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from telescore.core.metrics import lift_top_fraction


@dataclass(frozen=True)
class WindowQuality:
    """One window's quality as the callers felt it."""

    window: int
    rows: int
    positive_rate: float
    mean_score: float
    roc_auc: float | None
    """None when the window holds one class only."""
    top_decile_lift: float | None

    @property
    def calibration_gap(self) -> float:
        """Return |mean score - positive rate|."""
        return abs(self.mean_score - self.positive_rate)


@dataclass(frozen=True)
class StreamQuality:
    """Quality over a whole replayed stream: per window and pooled."""

    windows: list[WindowQuality]
    pooled_roc_auc: float
    mean_calibration_gap: float
    """Mean over windows of |mean score - positive rate|."""
    mean_top_decile_lift: float
    """Mean over windows of the top-decile lift (what a caller feels within a period)."""


def stream_quality(
    labels: np.ndarray, scores: np.ndarray, window_rows: int, first_window: int = 0
) -> StreamQuality:
    """Return per-window and pooled quality of `scores` against `labels`, in stream order.

    `first_window`: the stream's number of the first window given (the ones before it were
    not served, at a cold start).
    """
    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    if len(labels) != len(scores) or not len(labels):
        raise ValueError(f"{len(labels)} labels for {len(scores)} scores")
    windows = []
    for index, start in enumerate(range(0, len(labels), window_rows), start=first_window):
        y, s = labels[start : start + window_rows], scores[start : start + window_rows]
        both = len(np.unique(y)) == 2
        lift = lift_top_fraction(y, s, 0.1)
        windows.append(
            WindowQuality(
                window=index,
                rows=len(y),
                positive_rate=float(y.mean()),
                mean_score=float(s.mean()),
                roc_auc=float(roc_auc_score(y, s)) if both else None,
                top_decile_lift=None if np.isnan(lift) else lift,
            )
        )
    lifts = [w.top_decile_lift for w in windows if w.top_decile_lift is not None]
    return StreamQuality(
        windows=windows,
        pooled_roc_auc=float(roc_auc_score(labels, scores)),
        mean_calibration_gap=float(np.mean([w.calibration_gap for w in windows])),
        mean_top_decile_lift=float(np.mean(lifts)) if lifts else float("nan"),
    )
