"""The NumPy scorer gives predict_proba's probabilities, and falls back when it must."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from telescore.core.features import build_pipeline, split_features_label
from telescore.core.params import ModelParams
from telescore.core.requests import SMALL_BATCH, FeatureBatch
from telescore.core.schema import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES
from telescore.core.scoring import (
    compile_scorer,
    fast_scorer,
    fit_logit_offset,
    predict_proba_scorer,
    shift_log_odds,
    with_logit_offset,
)

DATASET = Path(__file__).resolve().parents[3] / "data" / "bank-additional-full.csv.gz"


@pytest.fixture(scope="module")
def sample() -> tuple[pd.DataFrame, np.ndarray]:
    return split_features_label(pd.read_csv(DATASET, sep=";").tail(3000))


def _columns(features: pd.DataFrame) -> FeatureBatch:
    return FeatureBatch.of({name: features[name].tolist() for name in FEATURES})


@pytest.mark.parametrize(
    "params",
    [
        ModelParams(kind="logistic_regression"),
        ModelParams(kind="logistic_regression", C=0.01),
        ModelParams(kind="hist_gradient_boosting", max_iter=30),
    ],
    ids=["logistic", "logistic-strongly-regularised", "boosting"],
)
def test_fast_scorer_matches_predict_proba(
    sample: tuple[pd.DataFrame, np.ndarray], params: ModelParams
) -> None:
    # given a pipeline fitted as training fits it
    features, labels = sample
    pipeline = build_pipeline(params).fit(features, labels)

    # when scoring with the fast path
    scorer = fast_scorer(pipeline)
    assert scorer is not None, "the training pipeline must be recognised"
    scores = scorer(_columns(features))

    # then every probability equals predict_proba's, single rows included
    expected = pipeline.predict_proba(features)[:, 1]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-9)
    one = scorer(_columns(features.head(1)))
    np.testing.assert_allclose(one, expected[:1], rtol=0, atol=1e-9)


def test_unseen_category_scores_like_handle_unknown_ignore(
    sample: tuple[pd.DataFrame, np.ndarray],
) -> None:
    # given a model fitted on learnt categories, scoring a category it never saw
    features, labels = sample
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    pipeline = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("categorical", encoder, list(CATEGORICAL_FEATURES)),
                        ("numeric", StandardScaler(), list(NUMERIC_FEATURES)),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(max_iter=1000)),
        ]
    ).fit(features, labels)
    unseen = features.head(2).copy()
    unseen["month"] = "jan"  # never occurs in 2008-2010

    scores = fast_scorer(pipeline)(_columns(unseen))  # type: ignore[misc]

    np.testing.assert_allclose(scores, pipeline.predict_proba(unseen)[:, 1], rtol=0, atol=1e-9)


def test_unrecognised_pipelines_fall_back_to_predict_proba(
    sample: tuple[pd.DataFrame, np.ndarray],
) -> None:
    # given a pipeline with a scaler the fast path does not know
    features, labels = sample
    pipeline = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), ["job"]),
                        ("numeric", MinMaxScaler(), list(NUMERIC_FEATURES)),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(max_iter=1000)),
        ]
    ).fit(features, labels)

    assert fast_scorer(pipeline) is None, "MinMaxScaler is not a recognised step"
    scores = compile_scorer(pipeline)(_columns(features.head(5)))
    np.testing.assert_allclose(scores, pipeline.predict_proba(features.head(5))[:, 1])


def test_reference_scorer_reads_columns_in_schema_order(
    sample: tuple[pd.DataFrame, np.ndarray],
) -> None:
    features, labels = sample
    pipeline = build_pipeline(ModelParams()).fit(features, labels)
    batch = _columns(features.head(4))
    shuffled = FeatureBatch(
        columns=dict(reversed(list(batch.columns.items()))), n_rows=batch.n_rows
    )

    scores = predict_proba_scorer(pipeline)(shuffled)

    np.testing.assert_allclose(scores, pipeline.predict_proba(features.head(4))[:, 1])


@pytest.mark.parametrize(
    "params",
    [ModelParams(kind="logistic_regression"), ModelParams(kind="hist_gradient_boosting")],
    ids=["logistic", "boosting"],
)
def test_small_batches_score_as_the_same_rows_in_a_large_batch(
    sample: tuple[pd.DataFrame, np.ndarray], params: ModelParams
) -> None:
    # given rows scored one batch at a time below and above the small-batch limit
    features, labels = sample
    scorer = compile_scorer(build_pipeline(params).fit(features, labels))
    rows = features.tail(SMALL_BATCH * 3)
    assert not _columns(rows).small, "the whole batch must take the NumPy path"

    # when the same rows are scored in small batches
    small = [
        score
        for start in range(0, len(rows), SMALL_BATCH)
        for score in scorer(_columns(rows.iloc[start : start + SMALL_BATCH]))
    ]

    # then each gets the score it gets in the large batch
    np.testing.assert_allclose(small, scorer(_columns(rows)), rtol=0, atol=1e-12)


MACRO = ("emp.var.rate", "cons.price.idx", "cons.conf.idx", "euribor3m", "nr.employed")


@pytest.mark.parametrize(
    "params",
    [
        ModelParams(kind="logistic_regression", C=0.01, ignore_features=MACRO),
        ModelParams(kind="hist_gradient_boosting", max_iter=30, ignore_features=("job", "age")),
    ],
    ids=["logistic-without-macro", "boosting-without-a-category-and-a-number"],
)
def test_ignored_inputs_are_dropped_and_the_fast_scorer_still_matches(
    sample: tuple[pd.DataFrame, np.ndarray], params: ModelParams
) -> None:
    # given a pipeline told to ignore some inputs, fitted on every input as training does
    features, labels = sample
    pipeline = build_pipeline(params).fit(features, labels)

    # when one ignored input is changed wildly
    ignored = params.ignore_features[0]
    changed = features.copy()
    changed[ignored] = changed[ignored].iloc[::-1].to_numpy()

    # then the model does not see it, and the fast scorer gives predict_proba's figures
    expected = pipeline.predict_proba(features)[:, 1]
    np.testing.assert_array_equal(pipeline.predict_proba(changed)[:, 1], expected)
    scorer = fast_scorer(pipeline)
    assert scorer is not None, "a pipeline with ignored inputs must still be recognised"
    np.testing.assert_allclose(scorer(_columns(features)), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(scorer(_columns(features.head(1))), expected[:1], atol=1e-9)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


@pytest.mark.parametrize("rows", [3, 500], ids=["small-batch", "large-batch"])
def test_shift_log_odds_is_the_sigmoid_of_the_shifted_logit(rows: int) -> None:
    # given probabilities, 0 and 1 among them
    probabilities = np.linspace(0.0, 1.0, rows)

    # when their log-odds are shifted by 0.7
    shifted = np.asarray(shift_log_odds(probabilities.tolist(), 0.7))

    # then inner ones move exactly as sigmoid(logit(p) + 0.7), and 0 and 1 stay put
    inner = probabilities[1:-1]
    expected = _sigmoid(np.log(inner / (1 - inner)) + 0.7)
    np.testing.assert_allclose(shifted[1:-1], expected, rtol=1e-12)
    assert (shifted[0], shifted[-1]) == (0.0, 1.0), "certainties must stay certainties"
    assert shift_log_odds([0.2, 0.4], 0.0) == [0.2, 0.4], "a zero offset changes nothing"


def test_the_offset_wraps_a_scorer_only_when_it_is_not_zero() -> None:
    def scorer(batch: FeatureBatch) -> list[float]:
        return [0.25] * batch.n_rows

    assert with_logit_offset(scorer, 0.0) is scorer, "no wrapper, no cost, without an offset"
    # odds 1:3 times 3 are even odds
    shifted = with_logit_offset(scorer, float(np.log(3.0)))(FeatureBatch(columns={}, n_rows=2))
    np.testing.assert_allclose(shifted, [0.5, 0.5], rtol=1e-12)


def test_the_fitted_offset_makes_the_mean_score_the_positive_rate() -> None:
    # given scores that average about 0.1 on rows where 40% subscribed
    rng = np.random.default_rng(0)
    scores = rng.beta(1, 9, size=2000)
    labels = (rng.random(2000) < 0.4).astype(float)

    # when the offset is fitted
    offset = fit_logit_offset(scores, labels, max_offset=4.0)

    # then the shifted scores average the positive rate, and keep their order
    shifted = np.asarray(shift_log_odds(scores.tolist(), offset))
    assert shifted.mean() == pytest.approx(labels.mean(), abs=1e-9), offset
    assert offset > 0, "under-predicting scores must be shifted up"
    assert (np.argsort(shifted, kind="stable") == np.argsort(scores, kind="stable")).all()


def test_one_class_samples_and_extreme_rates_stop_at_the_cap() -> None:
    scores = np.full(600, 0.5)

    no_positive = fit_logit_offset(scores, np.zeros(600), max_offset=4.0)
    all_positive = fit_logit_offset(scores, np.ones(600), max_offset=4.0)
    modest = fit_logit_offset(scores, np.r_[np.ones(300), np.zeros(300)], max_offset=4.0)

    # half a row from 0: logit(1/1200) is about -7.1, beyond the cap
    assert no_positive == -4.0, no_positive
    assert all_positive == 4.0, all_positive
    assert modest == pytest.approx(0.0, abs=1e-12), "a calibrated sample needs no offset"


def test_a_fit_without_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="0 scores for 0 labels"):
        fit_logit_offset([], [], max_offset=4.0)
    with pytest.raises(ValueError, match="2 scores for 1 labels"):
        fit_logit_offset([0.1, 0.2], [1.0], max_offset=4.0)
