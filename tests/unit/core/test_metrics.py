import numpy as np
import pytest

from telescore.core.metrics import calibration_table, classification_metrics, lift_top_fraction


def test_lift_of_a_perfect_ranking() -> None:
    # given 10 positives in 100 rows ranked first, then the top decile is all positives
    labels = np.array([1] * 10 + [0] * 90)
    scores = np.linspace(1, 0, 100)
    assert lift_top_fraction(labels, scores, 0.1) == pytest.approx(10.0), "lift = 1.0 / 0.1"


def test_lift_of_a_constant_score_is_the_base_rate_in_row_order() -> None:
    labels = np.array([0, 1] * 50)
    assert lift_top_fraction(labels, np.zeros(100), 0.1) == pytest.approx(1.0), (
        "ties keep row order, so the top decile holds the base rate"
    )


def test_lift_without_positives_is_undefined() -> None:
    assert np.isnan(lift_top_fraction(np.zeros(10), np.ones(10))), "no positives: no lift"


def test_classification_metrics_on_hand_made_scores() -> None:
    # given scores that rank every positive above every negative
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    metrics = classification_metrics(labels, scores)
    assert metrics["roc_auc"] == pytest.approx(1.0), "perfect ranking gives AUC 1"
    assert metrics["pr_auc"] == pytest.approx(1.0), "perfect ranking gives PR AUC 1"
    expected_brier = np.mean((scores - labels) ** 2)
    assert metrics["brier"] == pytest.approx(expected_brier), "Brier is the mean squared error"
    assert metrics["calibration_gap"] == pytest.approx(scores.mean() - 0.4), "mean score - rate"


def test_metrics_with_one_class_are_nan_not_an_error() -> None:
    metrics = classification_metrics(np.zeros(5), np.linspace(0, 1, 5))
    assert np.isnan(metrics["roc_auc"]), "AUC is undefined with one class"


def test_calibration_table_bins_cover_every_row() -> None:
    labels = np.array([0, 1] * 50)
    scores = np.linspace(0, 1, 100)
    table = calibration_table(labels, scores, bins=10)
    assert sum(rows for _, _, rows in table) == 100, "every row lands in one bin"
    assert [row[0] for row in table] == sorted(row[0] for row in table), "bins ascend by score"
