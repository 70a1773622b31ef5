"""Promotion policy: when a newly trained model becomes the champion."""

from __future__ import annotations

import math
from dataclasses import dataclass

LOWER_IS_BETTER = frozenset({"brier"})
"""Metrics where a smaller value wins (the Brier score weighs calibration and ranking)."""


@dataclass(frozen=True)
class PromotionDecision:
    """Whether to move the champion alias to the candidate, and why."""

    promote: bool
    reason: str


def decide_promotion(
    candidate: float,
    champion: float | None,
    *,
    metric: str,
    min_improvement: float,
) -> PromotionDecision:
    """Decide from the candidate's and the champion's scores on the same holdout.

    Promote when there is no champion, or when the candidate beats it by at least
    `min_improvement` (higher wins, or lower for `LOWER_IS_BETTER` metrics). A missing (NaN)
    candidate score never promotes.
    """
    if math.isnan(candidate):
        return PromotionDecision(False, f"candidate {metric} is undefined on the holdout")
    if champion is None:
        return PromotionDecision(True, f"no champion yet; candidate {metric}={candidate:.4f}")
    if math.isnan(champion):
        return PromotionDecision(True, f"champion {metric} is undefined; candidate={candidate:.4f}")
    gain = champion - candidate if metric in LOWER_IS_BETTER else candidate - champion
    verdict = "beats" if gain >= min_improvement else "does not beat"
    return PromotionDecision(
        gain >= min_improvement,
        f"candidate {metric}={candidate:.4f} {verdict} champion {champion:.4f} "
        f"by the required {min_improvement:.4f} (gain {gain:+.4f})",
    )
