"""Score validated feature columns with a fitted pipeline, without pandas on the hot path.

`Pipeline.predict_proba` on one row costs about 5 ms, nearly all of it pandas and
ColumnTransformer bookkeeping; the arithmetic is microseconds. `compile_scorer` reads the fitted
encoder, scaler and classifier once and returns a NumPy-only scorer of validated batches
(`core.requests.FeatureBatch`) giving the same probabilities (to floating-point rounding), or
falls back to `predict_proba` on a DataFrame when the model is not a shape it recognises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from telescore.core.requests import FeatureBatch
from telescore.core.schema import FEATURES, NUMERIC_FEATURES

Scorer = Callable[[FeatureBatch], list[float]]
"""A validated batch -> probability of class 1 per row."""
_NUMERIC_INDEX = {name: index for index, name in enumerate(NUMERIC_FEATURES)}


def compile_scorer(model: Any) -> Scorer:
    """Return the fastest exact scorer for a fitted model: NumPy-native if recognised."""
    return fast_scorer(model) or predict_proba_scorer(model)


def predict_proba_scorer(model: Any) -> Scorer:
    """Return a scorer that calls `model.predict_proba` on a DataFrame (the reference path)."""

    def score(batch: FeatureBatch) -> list[float]:
        frame = pd.DataFrame({name: batch.columns[name] for name in FEATURES})
        return np.asarray(model.predict_proba(frame), dtype=np.float64)[:, 1].tolist()

    return score


def fast_scorer(model: Any) -> Scorer | None:
    """Return a NumPy-only scorer for a recognised pipeline, or None to use `predict_proba`."""
    encoding = _Encoding.of(model)
    if encoding is None:
        return None
    classifier = model.steps[-1][1]
    classes = getattr(classifier, "classes_", None)
    if classes is None or len(classes) != 2 or not hasattr(classifier, "predict_proba"):
        return None
    if getattr(classifier, "n_features_in_", encoding.width) != encoding.width:
        return None
    if isinstance(classifier, LogisticRegression):
        return _LinearScorer.of(encoding, classifier)
    # Any other binary classifier still skips pandas: it gets the encoded matrix directly.
    return _EncodedScorer(encoding, classifier)


@dataclass(frozen=True)
class _Categorical:
    name: str
    positions: dict[str, int]
    """Category -> column of the encoded matrix (absent categories encode as all zeros)."""


@dataclass(frozen=True)
class _Numeric:
    names: tuple[str, ...]
    rows: list[int]
    """Where these features are in a batch's numeric matrix."""
    start: int
    """First column of the encoded matrix holding these features."""
    mean: np.ndarray | None
    scale: np.ndarray | None


@dataclass(frozen=True)
class _Encoding:
    """What the fitted ColumnTransformer does, as lookup tables and arrays."""

    categorical: tuple[_Categorical, ...]
    numeric: tuple[_Numeric, ...]
    width: int

    @classmethod
    def of(cls, model: Any) -> _Encoding | None:
        """Read a fitted `Pipeline([ColumnTransformer, classifier])`; None if not that shape."""
        if not isinstance(model, Pipeline) or len(model.steps) != 2:
            return None
        preprocess = model.steps[0][1]
        if not isinstance(preprocess, ColumnTransformer) or not hasattr(
            preprocess, "transformers_"
        ):
            return None
        if getattr(preprocess, "sparse_output_", False):
            return None
        categorical: list[_Categorical] = []
        numeric: list[_Numeric] = []
        width = 0
        for _, transformer, columns in preprocess.transformers_:
            if isinstance(transformer, str) and transformer == "drop":
                continue
            names = _column_names(columns)
            if names is None:
                return None
            if not names:
                continue
            if isinstance(transformer, OneHotEncoder):
                encoded = _one_hot(transformer, names, width)
                if encoded is None:
                    return None
                categorical.extend(encoded)
                width += sum(len(column.positions) for column in encoded)
            elif isinstance(transformer, StandardScaler) or transformer == "passthrough":
                if not all(name in _NUMERIC_INDEX for name in names):
                    return None  # a category passed through or scaled: not a shape we know
                scaler = transformer if isinstance(transformer, StandardScaler) else None
                numeric.append(
                    _Numeric(
                        names=tuple(names),
                        rows=[_NUMERIC_INDEX[name] for name in names],
                        start=width,
                        # A scaler built with_mean/with_std=False skips that step (scale_ is
                        # then None; mean_ may still be fitted but is not applied).
                        mean=scaler.mean_ if scaler is not None and scaler.with_mean else None,
                        scale=getattr(scaler, "scale_", None),
                    )
                )
                width += len(names)
            else:
                return None
        return cls(categorical=tuple(categorical), numeric=tuple(numeric), width=width)

    def numeric_block(self, block: _Numeric, batch: FeatureBatch) -> np.ndarray:
        """Return a numeric block scaled exactly as StandardScaler.transform does."""
        values = batch.numeric[block.rows].T
        # Same element-wise operations, in the same order, as StandardScaler: bit-identical
        # inputs, so tree thresholds in a boosted model compare exactly as they would there.
        if block.mean is not None:
            values -= block.mean
        if block.scale is not None:
            values /= block.scale
        return values

    def matrix(self, batch: FeatureBatch) -> np.ndarray:
        """Return the encoded feature matrix, as the ColumnTransformer would."""
        matrix = np.zeros((batch.n_rows, self.width), dtype=np.float64)
        rows = np.arange(batch.n_rows)
        for feature in self.categorical:
            positions = _lookup(feature.positions, batch.columns[feature.name], -1, np.int64)
            known = positions >= 0
            matrix[rows[known], positions[known]] = 1.0
        for block in self.numeric:
            matrix[:, block.start : block.start + len(block.names)] = self.numeric_block(
                block, batch
            )
        return matrix


def _column_names(columns: Any) -> list[str] | None:
    """Return a transformer's columns as feature names; None unless they are schema names."""
    if isinstance(columns, str):
        columns = [columns]
    try:
        names = list(columns)
    except TypeError:
        return None
    if not all(isinstance(name, str) and name in FEATURES for name in names):
        return None
    return names


def _one_hot(encoder: OneHotEncoder, names: Sequence[str], start: int) -> list[_Categorical] | None:
    """Map each category of a fitted encoder to its output column; None if not plain one-hot."""
    if encoder.handle_unknown != "ignore" or getattr(encoder, "drop_idx_", None) is not None:
        return None
    if getattr(encoder, "_infrequent_enabled", False) or getattr(encoder, "sparse_output_", False):
        return None
    encoded = []
    position = start
    for name, categories in zip(names, encoder.categories_, strict=True):
        positions = {}
        for category in categories.tolist():
            positions[category] = position
            position += 1
        encoded.append(_Categorical(name=name, positions=positions))
    return encoded


def _lookup(
    table: Mapping[Any, Any], values: Sequence[Any], default: Any, dtype: Any
) -> np.ndarray:
    """Map each value through `table` (missing -> default) into an array of `dtype`."""
    get = table.get
    return np.fromiter((get(value, default) for value in values), dtype=dtype, count=len(values))


@dataclass(frozen=True)
class _LinearScorer:
    """Logistic regression folded into lookups: one weight per category, one per number."""

    intercept: float
    categorical: tuple[tuple[str, dict[str, float]], ...]
    numeric_weights: np.ndarray
    """One weight per feature of NUMERIC_FEATURES (0 for one the model does not use)."""

    @classmethod
    def of(cls, encoding: _Encoding, classifier: LogisticRegression) -> _LinearScorer | None:
        coef = np.asarray(classifier.coef_, dtype=np.float64)
        if coef.shape != (1, encoding.width):
            return None
        weights = coef[0]
        intercept = float(np.asarray(classifier.intercept_, dtype=np.float64)[0])
        categorical = tuple(
            (
                feature.name,
                {category: float(weights[at]) for category, at in feature.positions.items()},
            )
            for feature in encoding.categorical
        )
        numeric_weights = np.zeros(len(NUMERIC_FEATURES))
        for block in encoding.numeric:
            block_weights = weights[block.start : block.start + len(block.names)].copy()
            # (x - mean) / scale * w == x * (w / scale) - mean * w / scale: fold the scaler into
            # the weights and the intercept so scoring is one dot product.
            if block.scale is not None:
                block_weights = block_weights / block.scale
            if block.mean is not None:
                intercept -= float(np.dot(block.mean, block_weights))
            numeric_weights[block.rows] += block_weights
        return cls(intercept, categorical, numeric_weights)

    @cached_property
    def _weighted(self) -> tuple[tuple[str, float], ...]:
        """The numeric features the model uses, with their folded weights."""
        weights = self.numeric_weights.tolist()
        return tuple((name, w) for name, w in zip(NUMERIC_FEATURES, weights, strict=True) if w)

    def __call__(self, batch: FeatureBatch) -> list[float]:
        categories = [
            [table.get(value, 0.0) for value in batch.columns[name]]
            for name, table in self.categorical
        ]
        if batch.small:
            # Plain floats: for a few rows, NumPy's per-call cost is most of the work.
            scores = []
            for row in range(batch.n_rows):
                logit = self.intercept
                for name, weight in self._weighted:
                    logit += weight * batch.columns[name][row]
                for weights in categories:
                    logit += weights[row]
                scores.append(_logistic(logit))
            return scores
        logits = self.numeric_weights @ batch.numeric + self.intercept
        if categories:
            logits += np.sum(categories, axis=0)
        # The logistic function, as LogisticRegression.predict_proba applies it for two classes.
        return (1.0 / (1.0 + np.exp(-logits))).tolist()


@dataclass(frozen=True)
class _EncodedScorer:
    """Any binary classifier, fed the encoded matrix directly instead of a DataFrame."""

    encoding: _Encoding
    classifier: Any

    def __call__(self, batch: FeatureBatch) -> list[float]:
        probabilities = self.classifier.predict_proba(self.encoding.matrix(batch))
        return np.asarray(probabilities, dtype=np.float64)[:, 1].tolist()


def _logistic(logit: float) -> float:
    # exp of a large positive number overflows: the same value from the other side.
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    odds = math.exp(logit)
    return odds / (1.0 + odds)
