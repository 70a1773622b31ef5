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
from telescore.core.scoring import compile_scorer, fast_scorer, predict_proba_scorer

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
