"""Release decisions on seeded, simulated outcomes: promote, roll back or wait."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from telescore.core import release
from telescore.core.release import ArmEvidence, ReleaseRules, decide_release

RULES = ReleaseRules()
CHAMPION_SEPARATION = 0.8
"""Gap between positives' and negatives' latent scores: a ROC AUC near 0.72, as here."""


def simulate(seed: int, rows: int, separation: float, rate: float = 0.12) -> tuple[Any, Any]:
    """Return scores and labels of `rows` labelled predictions by a model of `separation`.

    A prospect's latent score is normal, shifted by `separation` when it subscribes; the model
    reports it through a logistic link, so the scores are probabilities near the base rate.
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < rate).astype(int)
    latent = rng.normal(separation * labels, 1.0)
    return 1 / (1 + np.exp(-(latent - 2))), labels


def shared_rows(
    seed: int, rows: int, champion_noise: float = 0.6, challenger_noise: float = 0.3
) -> tuple[Any, Any, Any]:
    """Return champion scores, challenger scores and labels of the same rows (shadow mode).

    Both models see the same prospect (a shared latent score) through their own noise; the
    challenger's smaller noise makes it a little better, and the two rank mostly alike.
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < 0.12).astype(int)
    latent = rng.normal(1.2 * labels, 1.0)

    def score(noise: float) -> Any:
        return 1 / (1 + np.exp(-(latent + rng.normal(0, noise, rows) - 2)))

    return score(champion_noise), score(challenger_noise), labels


def evidence(scores: Any, labels: Any, **overrides: Any) -> ArmEvidence:
    """An arm that served 5,000 requests with 0.1% errors, p99 8 ms, unless told otherwise."""
    figures: dict[str, Any] = {
        "requests": 5000,
        "errors": 5,
        "latency_p50_ms": 2.0,
        "latency_p99_ms": 8.0,
    }
    return ArmEvidence(scores=scores, labels=labels, **(figures | overrides))


def canary(
    challenger_separation: float, rows: int = 3000, seed: int = 0, **challenger: Any
) -> tuple[ArmEvidence, ArmEvidence]:
    """Champion and challenger arms of a canary: different prospects, independent samples."""
    return (
        evidence(*simulate(2 * seed, rows, CHAMPION_SEPARATION)),
        evidence(*simulate(2 * seed + 1, rows, challenger_separation), **challenger),
    )


def test_a_truly_better_challenger_is_promoted() -> None:
    # given a challenger whose scores separate subscribers better, on 3,000 labelled rows each
    champion, challenger = canary(challenger_separation=1.4)

    # when deciding
    decision = decide_release(champion, challenger, RULES, paired=False)

    # then it is promoted, on the strength of its ROC AUC
    assert decision.action == "promote", f"a clearly better challenger: {decision.reason}"
    auc = decision.comparison("roc_auc")
    assert auc is not None and auc.verdict == "better", f"ROC AUC must be better: {auc}"
    assert "ROC AUC" in decision.reason and "better" in decision.reason, decision.reason


def test_a_worse_challenger_is_rolled_back() -> None:
    champion, challenger = canary(challenger_separation=0.3)

    decision = decide_release(champion, challenger, RULES, paired=False)

    assert decision.action == "rollback", f"a clearly worse challenger: {decision.reason}"
    assert "significantly worse" in decision.reason, decision.reason


def test_a_tie_waits() -> None:
    # given a challenger exactly as good as the champion, on 3,000 labelled rows each
    champion, challenger = canary(challenger_separation=CHAMPION_SEPARATION, seed=3)

    decision = decide_release(champion, challenger, RULES, paired=False)

    # then nothing is decided yet: fewer rows than `decide_after_rows`, no significant gap
    assert decision.action == "wait", f"a tie at 3,000 rows per arm must wait: {decision.reason}"
    assert "no significant difference yet" in decision.reason, decision.reason
    assert all(each.verdict in {"inconclusive", "acceptable"} for each in decision.comparisons), (
        f"a tie must show no significant difference: {decision.comparisons}"
    )


def test_ties_rarely_decide_anything() -> None:
    # given 40 independent ties: each interval is at 95%, so a few false alarms are expected
    actions = Counter(
        decide_release(*canary(CHAMPION_SEPARATION, seed=seed), RULES, paired=False).action
        for seed in range(40)
    )

    assert actions["wait"] >= 34, f"most ties must wait: {dict(actions)}"
    assert actions["promote"] <= 2, f"an equal challenger promoted too often: {dict(actions)}"


def test_a_long_tie_is_rolled_back_for_no_measurable_gain() -> None:
    # given a tie on more labelled rows per arm than `decide_after_rows`
    rows = RULES.decide_after_rows or 0
    champion, challenger = canary(CHAMPION_SEPARATION, rows=rows + 2000, seed=3)

    decision = decide_release(champion, challenger, RULES, paired=False)

    assert decision.action == "rollback", f"a long tie must end: {decision.reason}"
    assert "no measurable gain" in decision.reason, decision.reason


def test_no_decide_after_rows_waits_for_ever() -> None:
    patient = RULES.model_copy(update={"decide_after_rows": None})
    champion, challenger = canary(CHAMPION_SEPARATION, rows=12_000, seed=3)

    decision = decide_release(champion, challenger, patient, paired=False)

    assert decision.action == "wait", f"without decide_after_rows a tie waits: {decision.reason}"


def test_a_gain_below_the_required_one_waits() -> None:
    demanding = RULES.model_copy(update={"min_auc_gain": 0.2})
    champion, challenger = canary(challenger_separation=1.4)

    decision = decide_release(champion, challenger, demanding, paired=False)

    assert decision.action == "wait", f"a gain of about 0.08 is below 0.2: {decision.reason}"
    assert "not yet above the required 0.200" in decision.reason, decision.reason


def test_too_few_labels_wait() -> None:
    # given a clearly better challenger, but only 150 labelled rows in its arm
    champion = evidence(*simulate(0, 3000, CHAMPION_SEPARATION))
    challenger = evidence(*simulate(1, 150, 2.0))

    decision = decide_release(champion, challenger, RULES, paired=False)

    assert decision.action == "wait", f"150 labelled rows are too few: {decision.reason}"
    assert "challenger has 150 labelled rows (200 required)" in decision.reason, decision.reason
    assert decision.comparison("roc_auc") is None, "quality must not be judged on too few rows"


@pytest.mark.parametrize("label", [0, 1], ids=["no subscriber", "only subscribers"])
def test_one_class_evidence_waits_rather_than_crashing(label: int) -> None:
    scores, _ = simulate(1, 3000, 1.4)
    champion = evidence(*simulate(0, 3000, CHAMPION_SEPARATION))
    challenger = evidence(scores, np.full(3000, label))

    decision = decide_release(champion, challenger, RULES, paired=False)

    assert decision.action == "wait", f"one class cannot rank anything: {decision.reason}"
    missing = "subscriptions" if label == 0 else "non-subscriptions"
    assert f"0 {missing}" in decision.reason, decision.reason


def test_a_higher_error_rate_rolls_back_before_outcomes_arrive() -> None:
    # given a challenger failing 3% of its requests against the champion's 0.1%, no outcome yet
    champion = evidence(np.array([]), np.array([]), requests=20_000, errors=20)
    challenger = evidence(np.array([]), np.array([]), requests=2000, errors=60)

    decision = decide_release(champion, challenger, RULES, paired=False)

    assert decision.action == "rollback", f"3% errors against 0.1%: {decision.reason}"
    assert "error rate 3.00%" in decision.reason, decision.reason


def test_an_error_rate_within_the_margin_does_not_roll_back() -> None:
    champion, challenger = canary(1.4, errors=40)  # 0.8% against 0.1%: within one point

    decision = decide_release(champion, challenger, RULES, paired=False)

    assert decision.action == "promote", f"0.7 point more errors is tolerated: {decision.reason}"


def test_a_slower_p99_rolls_back() -> None:
    # given a better challenger whose p99 is 60 ms against the champion's 8 ms (limit 37 ms)
    champion, challenger = canary(challenger_separation=1.4, latency_p99_ms=60.0)

    decision = decide_release(champion, challenger, RULES, paired=False)

    assert decision.action == "rollback", f"p99 60 ms against 8 ms: {decision.reason}"
    assert "p99 latency 60.00 ms" in decision.reason, decision.reason


def test_a_challenger_slower_on_every_request_rolls_back() -> None:
    # given a better challenger whose median is 6 ms against the champion's 2 ms (limit 4 ms),
    # its p99 within the tail's limit
    champion, challenger = canary(
        challenger_separation=1.4, latency_p50_ms=6.0, latency_p99_ms=12.0
    )

    # when the release is judged
    decision = decide_release(champion, challenger, RULES, paired=False)

    # then the median's guard rolls it back
    assert decision.action == "rollback", f"median 6 ms against 2 ms: {decision.reason}"
    assert "median latency 6.00 ms" in decision.reason, decision.reason


def test_sub_millisecond_jitter_does_not_roll_back() -> None:
    champion = evidence(
        *simulate(0, 3000, CHAMPION_SEPARATION), latency_p50_ms=0.2, latency_p99_ms=0.4
    )
    challenger = evidence(*simulate(1, 3000, 1.4), latency_p50_ms=0.3, latency_p99_ms=0.9)

    decision = decide_release(champion, challenger, RULES, paired=False)

    assert decision.action == "promote", f"0.9 ms against 0.4 ms is jitter: {decision.reason}"


def test_a_scheduler_stall_in_the_p99_does_not_roll_back() -> None:
    # given arms alike in the median (0.3 ms) where a loaded machine stalled the challenger's
    # worst request for 16 ms, and not the champion's (as the replay measured)
    champion = evidence(
        *simulate(0, 3000, CHAMPION_SEPARATION), latency_p50_ms=0.3, latency_p99_ms=0.5
    )
    challenger = evidence(*simulate(1, 3000, 1.4), latency_p50_ms=0.3, latency_p99_ms=16.0)

    # when the release is judged
    decision = decide_release(champion, challenger, RULES, paired=False)

    # then the latency guards let it through, and the better challenger is promoted
    assert decision.action == "promote", f"a 16 ms stall is not a slower model: {decision.reason}"


def test_too_little_traffic_waits() -> None:
    champion, challenger = canary(1.4, requests=60, errors=30)

    decision = decide_release(champion, challenger, RULES, paired=False)

    assert decision.action == "wait", f"60 requests are too few to judge: {decision.reason}"
    assert "challenger served 60 requests" in decision.reason, decision.reason


def test_lower_conversion_per_call_rolls_back() -> None:
    # given equal rankers, but the challenger's calls convert at 9% against the champion's 15%
    champion = evidence(*simulate(6, 3000, CHAMPION_SEPARATION), calls=1000, subscriptions=150)
    challenger = evidence(*simulate(7, 3000, CHAMPION_SEPARATION), calls=1000, subscriptions=90)

    decision = decide_release(champion, challenger, RULES, paired=False)

    assert decision.action == "rollback", f"conversion fell from 15% to 9%: {decision.reason}"
    assert "conversion per call" in decision.reason, decision.reason


def test_shadow_pairing_detects_a_smaller_difference_than_separate_arms() -> None:
    # given a challenger a little better than the champion (ROC AUC about +0.02), 3,000 rows:
    # in shadow both score the same rows; in a canary each arm has its own 3,000 prospects
    paired_promotions = unpaired_promotions = 0
    for seed in range(20):
        champion_scores, challenger_scores, labels = shared_rows(seed, 3000)
        shadow = decide_release(
            evidence(champion_scores, labels),
            evidence(challenger_scores, labels),
            RULES,
            paired=True,
        )
        champion_scores, _, champion_labels = shared_rows(1000 + seed, 3000)
        _, challenger_scores, challenger_labels = shared_rows(2000 + seed, 3000)
        split = decide_release(
            evidence(champion_scores, champion_labels),
            evidence(challenger_scores, challenger_labels),
            RULES,
            paired=False,
        )
        paired_promotions += shadow.action == "promote"
        unpaired_promotions += split.action == "promote"
        paired_auc, split_auc = shadow.comparison("roc_auc"), split.comparison("roc_auc")
        assert paired_auc and split_auc and paired_auc.low is not None and split_auc.low is not None
        paired_width = (paired_auc.high or 0) - paired_auc.low
        split_width = (split_auc.high or 0) - split_auc.low
        assert paired_width < 0.7 * split_width, (
            f"seed {seed}: the paired interval ({paired_width:.3f}) must be much narrower than "
            f"the unpaired one ({split_width:.3f})"
        )
        assert "paired" in paired_auc.method and "unpaired" in split_auc.method, "wrong path"

    # then the paired comparison promotes the better model far more often
    assert paired_promotions >= unpaired_promotions + 6, (
        f"paired promoted {paired_promotions} of 20, unpaired {unpaired_promotions}"
    )


def test_shadow_skips_the_unobservable_conversion() -> None:
    # given shadow evidence: the challenger's answers were never shown, so it made no call
    champion_scores, challenger_scores, labels = shared_rows(4, 3000, challenger_noise=0.0)
    champion = evidence(champion_scores, labels, calls=2500, subscriptions=300)
    challenger = evidence(challenger_scores, labels)

    decision = decide_release(champion, challenger, RULES, paired=True)

    assert decision.comparison("conversion") is None, "an unshown model has no conversion"
    assert decision.action == "promote", f"a much better shadow model: {decision.reason}"
    assert decision.paired, "the decision must record that it was paired"


def test_paired_evidence_must_hold_the_same_rows() -> None:
    champion, challenger = canary(1.4)

    with pytest.raises(ValueError, match="paired"):
        decide_release(champion, challenger, RULES, paired=True)


def test_the_record_holds_every_comparison() -> None:
    champion, challenger = canary(1.4, calls=1000, subscriptions=130)
    champion = evidence(champion.scores, champion.labels, calls=1000, subscriptions=110)

    decision = decide_release(champion, challenger, RULES, paired=False)

    metrics = [each.metric for each in decision.comparisons]
    assert metrics == [
        "roc_auc",
        "top_precision",
        "conversion",
        "error_rate",
        "latency_p50_ms",
        "latency_p99_ms",
    ], f"every metric must be in the record: {metrics}"
    for each in decision.comparisons[:3]:
        assert each.low is not None and each.high is not None, f"{each.metric} lacks an interval"
        assert each.low <= each.difference <= each.high, f"{each.metric}: estimate outside"
        assert each.verdict in {"better", "worse", "inconclusive"}, each
    record = decision.as_record()
    assert json.loads(json.dumps(record)) == record, "the record must be plain data"
    assert record["challenger"]["labelled_rows"] == 3000, "the record must hold the arm's counts"


def test_the_same_seed_gives_the_same_decision() -> None:
    champion, challenger = canary(1.0)

    first = decide_release(champion, challenger, RULES, paired=False)
    again = decide_release(champion, challenger, RULES, paired=False)
    reseeded = decide_release(
        champion, challenger, RULES.model_copy(update={"seed": 1}), paired=False
    )

    assert first == again, "the same evidence and rules must give the same decision"
    assert first.comparison("top_precision") != reseeded.comparison("top_precision"), (
        "the seed must drive the bootstrap"
    )


@pytest.mark.parametrize("paired", [True, False])
def test_the_rows_order_does_not_change_the_decision(paired: bool) -> None:
    # given the same labelled rows of both arms, once in stream order and once shuffled (the
    # promotion reads them in the log's order, the backtest in the stream's)
    champion_scores, challenger_scores, labels = shared_rows(0, 3000)
    shuffled = np.random.default_rng(3).permutation(len(labels))

    def arms(order: np.ndarray) -> tuple[ArmEvidence, ArmEvidence]:
        return (
            evidence(champion_scores[order], labels[order]),
            evidence(challenger_scores[order], labels[order]),
        )

    # when each is judged
    in_order = decide_release(*arms(np.arange(len(labels))), RULES, paired=paired)
    reordered = decide_release(*arms(shuffled), RULES, paired=paired)

    # then the bootstrap's interval, and so the decision, are the same
    assert in_order.comparison("top_precision") == reordered.comparison("top_precision"), (
        "the top precision's interval must not depend on the rows' order"
    )
    assert (in_order.action, in_order.reason) == (reordered.action, reordered.reason), (
        "the same evidence must give the same decision"
    )


def test_auc_matches_scikit_learn_with_ties() -> None:
    scores, labels = simulate(5, 2000, 1.0)
    rounded = np.round(scores, 2)  # many ties

    auc, _, _ = release._placements(rounded, labels)

    assert auc == pytest.approx(roc_auc_score(labels, rounded), abs=1e-12), "AUC is wrong"


@pytest.mark.parametrize("rows", [400, 3000])
def test_the_fast_bootstrap_is_the_plain_bootstrap(rows: int) -> None:
    # given the same rows scored by two models
    champion_scores, challenger_scores, labels = shared_rows(6, rows)

    # when the top-decile precision is bootstrapped over cells, and by resampling rows
    fast = release._bootstrap_top_precision(
        [champion_scores, challenger_scores], labels, 0.1, 3000, np.random.default_rng(0)
    )
    rng = np.random.default_rng(1)
    plain = np.empty((2, 3000))
    for resample in range(3000):
        rows_drawn = rng.integers(0, rows, rows)
        for column, scores in enumerate([champion_scores, challenger_scores]):
            plain[column, resample] = release._top_precision(
                scores[rows_drawn], labels[rows_drawn], 0.1
            )

    # then the two distributions agree within Monte Carlo error
    fast_quantiles = np.quantile(fast[1] - fast[0], [0.025, 0.5, 0.975])
    plain_quantiles = np.quantile(plain[1] - plain[0], [0.025, 0.5, 0.975])
    assert np.allclose(fast_quantiles, plain_quantiles, atol=0.015), (
        f"quantiles of the difference: {fast_quantiles} by cells, {plain_quantiles} by rows"
    )
    assert np.allclose(fast.std(axis=1), plain.std(axis=1), rtol=0.1), (
        f"spreads: {fast.std(axis=1)} by cells, {plain.std(axis=1)} by rows"
    )


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"scores": [0.1, 1.2], "labels": [0, 1]}, "scores"),
        ({"scores": [0.1, float("nan")], "labels": [0, 1]}, "scores"),
        ({"scores": [0.1, 0.2], "labels": [0, 2]}, "labels"),
        ({"scores": [0.1, 0.2], "labels": [0]}, "scores"),
        ({"errors": 6, "requests": 5}, "errors"),
        ({"latency_p99_ms": -1.0}, "latency_p99_ms"),
        ({"calls": 10}, "calls and subscriptions"),
        ({"calls": 10, "subscriptions": 11}, "subscriptions"),
    ],
)
def test_invalid_evidence_is_refused_naming_the_field(fields: dict[str, Any], named: str) -> None:
    figures: dict[str, Any] = {"scores": [0.1, 0.2], "labels": [0, 1]} | fields
    scores, labels = figures.pop("scores"), figures.pop("labels")

    with pytest.raises(ValueError, match=named):
        evidence(scores, labels, **figures)


def test_evidence_is_read_only() -> None:
    arm = evidence(*simulate(0, 100, 1.0))

    with pytest.raises(ValueError, match="read-only"):
        arm.scores[0] = 0.5


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"confidence": 1.0}, "confidence"),
        ({"min_positives": 1}, "min_positives"),
        ({"max_p99_latency_ratio": 0.9}, "max_p99_latency_ratio"),
        ({"decide_after_rows": 100}, "decide_after_rows"),
        ({"bootstrap_resamples": "1000"}, "bootstrap_resamples"),
    ],
)
def test_invalid_rules_are_refused_naming_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        ReleaseRules.model_validate(fields)


MARGIN = RULES.model_copy(update={"min_auc_gain": -0.01})
"""Non-inferiority: promote when the gain's interval lies above -0.01."""


def test_with_a_margin_an_equal_challenger_on_enough_rows_is_promoted() -> None:
    # given a shadow release of a challenger as good as the champion, on 5,000 shared rows
    champion, challenger, labels = shared_rows(0, 5000, champion_noise=0.15, challenger_noise=0.15)
    arms = evidence(champion, labels), evidence(challenger, labels)

    # when deciding with a margin of 0.01, and with the superiority test
    within = decide_release(*arms, MARGIN, paired=True)
    superior = decide_release(*arms, RULES, paired=True)

    # then the margin promotes it; the superiority test cannot tell a tie and waits
    auc = within.comparison("roc_auc")
    assert auc is not None and auc.low is not None and -0.01 < auc.low < 0, f"a tie: {auc}"
    assert within.action == "promote", f"non-inferior within 0.01: {within.reason}"
    assert "non-inferior (gain above -0.010)" in within.reason, within.reason
    assert superior.action == "wait", f"a tie is not significantly better: {superior.reason}"


def test_with_a_margin_a_clearly_worse_challenger_is_rolled_back() -> None:
    champion, challenger, labels = shared_rows(0, 3000, champion_noise=0.3, challenger_noise=1.2)

    decision = decide_release(
        evidence(champion, labels), evidence(challenger, labels), MARGIN, paired=True
    )

    assert decision.action == "rollback", f"a clearly worse challenger: {decision.reason}"
    assert "ROC AUC" in decision.reason and "significantly worse" in decision.reason


def test_with_a_margin_too_few_rows_wait() -> None:
    # given a tie, but only 150 labelled rows in each arm (200 required)
    champion, challenger, labels = shared_rows(0, 150, champion_noise=0.15, challenger_noise=0.15)

    decision = decide_release(
        evidence(champion, labels), evidence(challenger, labels), MARGIN, paired=True
    )

    assert decision.action == "wait", f"150 labelled rows are too few: {decision.reason}"
    assert decision.comparison("roc_auc") is None, "quality must not be judged on too few rows"


def test_with_a_margin_a_wide_interval_waits_then_is_rolled_back() -> None:
    # given a tie of noisy models: at 3,000 rows the interval still reaches below -0.01
    champion, challenger, labels = shared_rows(0, 3000, champion_noise=0.3, challenger_noise=0.3)
    arms = evidence(champion, labels), evidence(challenger, labels)
    bounded = MARGIN.model_copy(update={"decide_after_rows": 3000})

    early = decide_release(*arms, MARGIN, paired=True)
    late = decide_release(*arms, bounded, paired=True)

    assert early.action == "wait", f"non-inferiority not shown yet: {early.reason}"
    assert "not yet above the required -0.010" in early.reason, early.reason
    assert late.action == "rollback", f"past decide_after_rows it ends: {late.reason}"
    assert "non-inferiority not shown after 3,000" in late.reason, late.reason


@pytest.mark.parametrize("gain", [-0.051, -0.5])
def test_a_margin_wider_than_005_is_refused(gain: float) -> None:
    with pytest.raises(ValidationError, match="min_auc_gain"):
        ReleaseRules(min_auc_gain=gain)
    assert ReleaseRules(min_auc_gain=-0.05).min_auc_gain == -0.05, "-0.05 is the widest margin"
