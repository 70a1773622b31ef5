"""The model: preprocessing plus classifier as one scikit-learn pipeline, and the inputs' ranges."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from telescore.core.params import ModelParams
from telescore.core.schema import (
    CATEGORICAL_FEATURES,
    CATEGORICAL_VALUES,
    FEATURES,
    NUMERIC_FEATURES,
    TARGET,
)


def split_features_label(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Return the model inputs (in schema order) and the 0/1 label."""
    return frame.loc[:, list(FEATURES)], (frame[TARGET] == "yes").to_numpy(dtype=np.int64)


def build_pipeline(params: ModelParams) -> Pipeline:
    """Build an unfitted preprocessing + classifier pipeline.

    Inputs in `params.ignore_features` are dropped by the column transformer: the pipeline
    still takes every input of the schema, as serving sends them, and uses the others.
    """
    ignored = set(params.ignore_features)
    categorical = [name for name in CATEGORICAL_FEATURES if name not in ignored]
    numeric = [name for name in NUMERIC_FEATURES if name not in ignored]
    # Categories are fixed from the schema, not learnt: serving sees the same columns every time.
    encoder = OneHotEncoder(
        categories=[list(CATEGORICAL_VALUES[name]) for name in categorical],
        handle_unknown="ignore",
        sparse_output=False,
        dtype=np.float64,
    )
    transformers = [
        ("categorical", encoder, categorical),
        ("numeric", StandardScaler(), numeric),
    ]
    preprocess = ColumnTransformer(
        # An empty group would be fitted on no column at all: leave it out.
        [(name, step, columns) for name, step, columns in transformers if columns],
        remainder="drop",  # the ignored inputs
        verbose_feature_names_out=False,
    )
    classifier: LogisticRegression | HistGradientBoostingClassifier
    if params.kind == "logistic_regression":
        classifier = LogisticRegression(
            C=params.C, max_iter=params.max_iter, random_state=params.random_state
        )
    else:
        classifier = HistGradientBoostingClassifier(
            learning_rate=params.learning_rate,
            max_iter=params.max_iter,
            max_leaf_nodes=params.max_leaf_nodes,
            random_state=params.random_state,
        )
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def feature_ranges(features: pd.DataFrame) -> dict[str, list[float]]:
    """Return [min, max] of each numeric input seen in training, stored with the model."""
    return {
        name: [float(features[name].min()), float(features[name].max())]
        for name in NUMERIC_FEATURES
    }


def linear_feature_importance(pipeline: Pipeline) -> dict[str, float] | None:
    """Return each input's share of |coefficient| for a linear model; None for other models.

    Deepchecks otherwise falls back to permutation importance, which costs about a minute.
    """
    classifier = pipeline.named_steps["classifier"]
    if not hasattr(classifier, "coef_"):
        return None
    names = pipeline.named_steps["preprocess"].get_feature_names_out()
    totals = dict.fromkeys(FEATURES, 0.0)
    for encoded_name, weight in zip(names, classifier.coef_[0], strict=True):
        # One-hot columns are named "<input>_<category>"; numeric ones keep the input's name.
        source = next(f for f in FEATURES if encoded_name == f or encoded_name.startswith(f + "_"))
        totals[source] += abs(float(weight))
    total = sum(totals.values()) or 1.0
    return {name: value / total for name, value in totals.items()}
