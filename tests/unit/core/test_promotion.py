import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from telescore.core import release
from telescore.core.promotion import PromotionDecision, decide_promotion, paired_auc_test


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
    # then it is promoted only when it beats the champion by more than the margin
    assert decision.promote is expected, decision.reason
    assert f"{champion:.4f}" in decision.reason, "the reason must name the champion's score"


def test_at_a_zero_margin_a_candidate_equal_to_the_champion_is_not_released() -> None:
    # given params.yaml's margin of 0 and a candidate the same as the champion (retrained on
    # the same rows), then one a little better
    same = decide_promotion(0.7012, 0.7012, metric="roc_auc", min_improvement=0.0)
    better = decide_promotion(0.7013, 0.7012, metric="roc_auc", min_improvement=0.0)
    # then only the better one goes on to its release
    assert not same.promote, f"an equal model has nothing to offer: {same.reason}"
    assert "does not beat" in same.reason, same.reason
    assert better.promote, f"a better one passes the gate: {better.reason}"


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


# The statistical gate: a paired DeLong test on the same fresh rows.


def same_rows(
    seed: int, rows: int, champion_noise: float, candidate_noise: float, rate: float = 0.12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return labels and the champion's and candidate's scores of the same rows.

    Both models see the prospect's latent score through noise of their own: the noisier one
    ranks worse, and the two rank mostly alike (as two retrains of one model do).
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < rate).astype(int)
    latent = rng.normal(1.2 * labels, 1.0)

    def score(noise: float) -> np.ndarray:
        return 1 / (1 + np.exp(-(latent + rng.normal(0, noise, rows) - 2)))

    return labels, score(champion_noise), score(candidate_noise)


def gate(
    labels: np.ndarray, champion: np.ndarray, candidate: np.ndarray, min_improvement: float = -1.0
) -> PromotionDecision:
    """The gate as training takes it, the point comparison on ROC AUC included."""
    test, note = paired_auc_test(
        labels, champion, candidate, confidence=0.95, min_rows_per_class=20
    )
    return decide_promotion(
        roc_auc_score(labels, candidate),
        roc_auc_score(labels, champion),
        metric="roc_auc",
        min_improvement=min_improvement,
        test=test,
        test_note=note,
    )


def test_a_significantly_worse_candidate_is_not_released_even_when_any_candidate_may_be() -> None:
    # given a candidate that ranks the same 3,000 fresh rows clearly worse than the champion,
    # and a point comparison that lets every candidate through (min_improvement -1)
    labels, champion, candidate = same_rows(1, 3000, champion_noise=0.3, candidate_noise=1.2)
    # when the gate is taken
    decision = gate(labels, champion, candidate, min_improvement=-1.0)
    # then the paired test stops it, and says why
    assert not decision.promote, decision.reason
    assert decision.test is not None and decision.test.verdict == "worse", decision.test
    assert "significantly worse" in decision.reason and "DeLong, paired" in decision.reason, (
        decision.reason
    )
    assert "3000 fresh rows" in decision.reason, decision.reason


def test_a_candidate_no_measurably_worse_passes_and_the_reason_reports_the_test() -> None:
    # given two models of the same quality (same noise) on the same rows
    labels, champion, candidate = same_rows(2, 3000, champion_noise=0.6, candidate_noise=0.6)
    # when the gate lets any candidate through the point comparison
    decision = gate(labels, champion, candidate, min_improvement=-1.0)
    # then it passes (live outcomes will decide), and the reason carries the test's interval
    assert decision.promote, decision.reason
    assert decision.test is not None and decision.test.verdict == "inconclusive", decision.test
    assert "no significant difference" in decision.reason, decision.reason


def test_the_point_comparison_still_applies_when_the_test_passes() -> None:
    # given a candidate not significantly different, and a required gain it does not reach
    labels, champion, candidate = same_rows(2, 3000, champion_noise=0.6, candidate_noise=0.6)
    decision = gate(labels, champion, candidate, min_improvement=0.05)
    # then the point comparison keeps the champion
    assert not decision.promote and "does not beat" in decision.reason, decision.reason


def test_too_few_subscriptions_for_the_test_leave_the_point_comparison_alone() -> None:
    # given 300 fresh rows with fewer than 20 subscriptions
    labels, champion, candidate = same_rows(3, 300, 0.3, 1.2, rate=0.03)
    assert labels.sum() < 20, "the simulation should leave too few subscriptions"
    # when the gate is taken with every candidate allowed through the point comparison
    decision = gate(labels, champion, candidate, min_improvement=-1.0)
    # then no test was taken, the candidate passes on the point comparison, and it is said
    assert decision.test is None and decision.promote, decision
    assert "no paired test" in decision.reason and "(20 of each required)" in decision.reason, (
        decision.reason
    )


def test_the_offline_test_is_the_online_releases_paired_delong() -> None:
    # given shadow-like evidence: both models scored the same rows
    labels, champion, candidate = same_rows(4, 2000, 0.3, 1.2)
    # when the gate's test and a shadow release's decision look at them
    offline, _ = paired_auc_test(
        labels, champion, candidate, confidence=0.95, min_rows_per_class=20
    )

    def arm(scores: np.ndarray) -> release.ArmEvidence:
        return release.ArmEvidence(
            scores=scores,
            labels=labels,
            requests=500,
            errors=0,
            latency_p50_ms=1.0,
            latency_p99_ms=2.0,
        )

    online = release.decide_release(
        arm(champion), arm(candidate), release.ReleaseRules(), paired=True
    ).comparison("roc_auc")
    # then they are the same test, with the same interval
    assert offline is not None and offline == online, (offline, online)
    assert offline.verdict == "worse", offline


def test_two_equally_good_models_are_rarely_stopped_and_a_worse_one_usually_is() -> None:
    # given 200 simulated retrains on 2,000 fresh rows each (seeded)
    stopped_equal = stopped_worse = 0
    for seed in range(200):
        labels, champion, equal = same_rows(seed, 2000, 0.6, 0.6)
        stopped_equal += not gate(labels, champion, equal).promote
        labels, champion, worse = same_rows(seed + 10_000, 2000, 0.6, 1.2)
        stopped_worse += not gate(labels, champion, worse).promote
    # then an equally good candidate is stopped about 2.5% of the time (one side of a 95%
    # interval; 7 here), and one whose AUC is about 0.06 lower nearly always (191 here)
    assert stopped_equal <= 12, f"{stopped_equal} of 200 equally good candidates stopped"
    assert stopped_worse >= 170, f"only {stopped_worse} of 200 worse candidates stopped"
