"""The offline gate of a candidate: may a newly trained model be released against the champion?

Two checks on the same holdout rows, the newest labelled ones the champion never trained on:

- the point comparison on `promotion.metric`: the candidate must beat the champion by
  `min_improvement` (negative: it may be that much worse);
- where the data allows (`min_test_rows_per_class` subscriptions and as many
  non-subscriptions), a paired statistical test: ROC AUC by DeLong's method, both models scoring
  the same rows, the test an online release uses (`core.release.compare_auc`). A candidate
  whose ROC AUC is significantly lower than the champion's is never released, whatever
  `min_improvement` says. ROC AUC rather than the Brier score because the AUC is what callers
  working down the list feel, and it is the same with or without the log-odds offset served
  with each model; a raw Brier score mostly weighs the base rate, which the offset corrects.

Passing the gate releases the candidate (a shadow or canary release judged on live outcomes,
`core.release`); the first model ever, with no champion to compare against, passes at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from telescore.core.release import MetricComparison, compare_auc

LOWER_IS_BETTER = frozenset({"brier"})
"""Metrics where a smaller value wins (the Brier score weighs calibration and ranking)."""


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the candidate passes the gate (released, or champion when there is none), and why."""

    promote: bool
    reason: str
    test: MetricComparison | None = None
    """The paired test taken on the holdout rows; None when there was none."""


def paired_auc_test(
    labels: np.ndarray,
    champion_scores: np.ndarray,
    candidate_scores: np.ndarray,
    *,
    confidence: float,
    min_rows_per_class: int,
) -> tuple[MetricComparison | None, str]:
    """Compare candidate and champion ROC AUC on the same rows (paired DeLong).

    Returns the comparison, or None with the reason when the rows do not allow it: fewer than
    `min_rows_per_class` rows of either class.
    """
    labels = np.asarray(labels).astype(np.int8)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if min(positives, negatives) < min_rows_per_class:
        return None, (
            f"no paired test: {positives} subscriptions and {negatives} non-subscriptions "
            f"among {len(labels)} fresh rows ({min_rows_per_class} of each required)"
        )
    comparison = compare_auc(
        (np.asarray(champion_scores, dtype=np.float64), labels),
        (np.asarray(candidate_scores, dtype=np.float64), labels),
        paired=True,
        confidence=confidence,
    )
    return comparison, f"{describe_test(comparison)} on {len(labels)} fresh rows"


def describe_test(comparison: MetricComparison) -> str:
    """Say what a paired test found, in one clause."""
    low, high = comparison.low or 0.0, comparison.high or 0.0
    found = {
        "worse": "significantly worse",
        "better": "significantly better",
    }.get(comparison.verdict, "no significant difference")
    return (
        f"ROC AUC {comparison.challenger:.4f} against {comparison.champion:.4f}, {found} "
        f"({comparison.method} interval of the difference {low:+.4f} to {high:+.4f})"
    )


def decide_promotion(
    candidate: float,
    champion: float | None,
    *,
    metric: str,
    min_improvement: float,
    test: MetricComparison | None = None,
    test_note: str = "",
) -> PromotionDecision:
    """Decide from the candidate's and the champion's scores on the same holdout.

    Pass when there is no champion, or when the candidate beats it by at least
    `min_improvement` (higher wins, or lower for `LOWER_IS_BETTER` metrics) and the paired
    `test`, when one was taken, does not find it significantly worse. A missing (NaN) candidate
    score never passes. `test_note` says why no test was taken, if none was.
    """
    if math.isnan(candidate):
        return PromotionDecision(False, f"candidate {metric} is undefined on the holdout")
    if champion is None:
        return PromotionDecision(True, f"no champion yet; candidate {metric}={candidate:.4f}")
    said = test_note or (describe_test(test) if test is not None else "")
    note = f"; {said}" if said else ""
    if test is not None and test.verdict == "worse":
        return PromotionDecision(False, f"candidate not released: {said}", test)
    if math.isnan(champion):
        return PromotionDecision(
            True, f"champion {metric} is undefined; candidate={candidate:.4f}{note}", test
        )
    gain = champion - candidate if metric in LOWER_IS_BETTER else candidate - champion
    # Strictly: at `min_improvement: 0` a candidate equal to the champion (the same data
    # trained again) has nothing to offer and is not released.
    beats = gain > min_improvement
    verdict = "beats" if beats else "does not beat"
    return PromotionDecision(
        beats,
        f"candidate {metric}={candidate:.4f} {verdict} champion {champion:.4f} "
        f"by the required {min_improvement:.4f} (gain {gain:+.4f}){note}",
        test,
    )
