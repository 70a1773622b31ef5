import math

import pytest

from telescore.core.promotion import decide_promotion


def test_first_model_becomes_champion() -> None:
    # given no champion, when deciding, then the candidate is promoted
    decision = decide_promotion(0.61, None, metric="roc_auc", min_improvement=0.01)
    assert decision.promote, "the first model must become champion"
    assert "no champion" in decision.reason, "the reason must say why"


@pytest.mark.parametrize(
    ("candidate", "champion", "expected"),
    [(0.63, 0.61, True), (0.615, 0.61, False), (0.61, 0.61, False), (0.60, 0.61, False)],
)
def test_candidate_must_beat_champion_by_margin(
    candidate: float, champion: float, expected: bool
) -> None:
    # given a champion score, when the candidate is compared with a 0.01 margin
    decision = decide_promotion(candidate, champion, metric="roc_auc", min_improvement=0.01)
    # then it is promoted only when it beats the champion by at least the margin
    assert decision.promote is expected, decision.reason
    assert f"{champion:.4f}" in decision.reason, "the reason must name the champion's score"


def test_undefined_candidate_score_never_promotes() -> None:
    decision = decide_promotion(math.nan, None, metric="roc_auc", min_improvement=0.0)
    assert not decision.promote, "a NaN score (one class in the holdout) must not promote"


def test_undefined_champion_score_is_replaced() -> None:
    decision = decide_promotion(0.6, math.nan, metric="roc_auc", min_improvement=0.01)
    assert decision.promote, "a champion without a defined score cannot block a valid model"


def test_brier_promotes_the_lower_score() -> None:
    better = decide_promotion(0.08, 0.12, metric="brier", min_improvement=0.01)
    worse = decide_promotion(0.12, 0.08, metric="brier", min_improvement=0.01)

    assert better.promote, f"a lower Brier score is better: {better.reason}"
    assert not worse.promote, f"a higher Brier score must not promote: {worse.reason}"
    assert "gain +0.0400" in better.reason, better.reason
