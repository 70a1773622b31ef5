"""Score validated feature columns with a fitted pipeline, without pandas on the hot path.

`Pipeline.predict_proba` on one row costs about 5 ms, nearly all of it pandas and
ColumnTransformer bookkeeping; the arithmetic is microseconds. `compile_scorer` reads the fitted
encoder, scaler and classifier once and returns a NumPy-only scorer of validated batches
(`core.requests.FeatureBatch`) giving the same probabilities (to floating-point rounding), or
falls back to `predict_proba` on a DataFrame when the model is not a shape it recognises.

A served model may carry a log-odds offset b (`with_logit_offset`): its scores are
sigmoid(logit(p) + b), with b fitted on recent outcomes by `fit_logit_offset` so that the mean
served score equals the recent positive rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

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
LOGIT_OFFSET_TAG: Final = "logit_offset"
"""Registry tag of a model version: the log-odds offset fitted when it was registered."""
_NUMERIC_INDEX = {name: index for index, name in enumerate(NUMERIC_FEATURES)}
_SMALL_BATCH = 64
"""Up to this many scores, plain floats beat NumPy's per-call cost."""
_BISECTIONS = 60
"""Halvings of the offset's interval: 2 * max_offset / 2**60 is far below any score's rounding."""


def compile_scorer(model: Any) -> Scorer:
    """Return the fastest exact scorer for a fitted model: NumPy-native if recognised."""
    return fast_scorer(model) or predict_proba_scorer(model)


def shift_log_odds(scores: Sequence[float], offset: float) -> list[float]:
    """Return sigmoid(logit(p) + offset) for each probability p: its odds times exp(offset)."""
    if offset == 0.0:
        return list(scores)
    factor = math.exp(offset)
    # p * f / (p * f + 1 - p) is sigmoid(logit(p) + offset) without a logarithm: exact at 0 and
    # 1 (they stay 0 and 1), and no overflow for any p in [0, 1] within a capped offset.
    if len(scores) <= _SMALL_BATCH:
        return [p * factor / (p * factor + (1.0 - p)) for p in scores]
    values = np.asarray(scores, dtype=np.float64)
    shifted = values * factor
    return (shifted / (shifted + (1.0 - values))).tolist()


def with_logit_offset(scorer: Scorer, offset: float) -> Scorer:
    """Return a scorer whose scores are `scorer`'s with their log-odds shifted by `offset`."""
    if offset == 0.0:
        return scorer

    def score(batch: FeatureBatch) -> list[float]:
        return shift_log_odds(scorer(batch), offset)

    return score


def fit_logit_offset(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[float] | np.ndarray,
    max_offset: float,
) -> float:
    """Return b in [-max_offset, max_offset] with mean(sigmoid(logit(p) + b)) = positive rate.

    The maximum-likelihood intercept of a logistic recalibration with the slope fixed at 1.
    The rate is kept half a row away from 0 and 1, so that a sample of one class gives a
    finite offset (then the cap, if it is nearer); the mean shifted score grows with b, so a
    bisection finds the root, or the cap on the side it lies beyond.
    """
    probabilities = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    outcomes = np.asarray(labels, dtype=np.float64)
    if not len(outcomes) or len(outcomes) != len(probabilities):
        raise ValueError(f"{len(probabilities)} scores for {len(outcomes)} labels")
    if max_offset <= 0:
        raise ValueError(f"max_offset must be positive, not {max_offset}")
    half_row = 0.5 / len(outcomes)
    rate = float(np.clip(outcomes.mean(), half_row, 1.0 - half_row))

    def excess(offset: float) -> float:
        factor = math.exp(offset)
        shifted = probabilities * factor
        return float(np.mean(shifted / (shifted + (1.0 - probabilities)))) - rate

    low, high = -max_offset, max_offset
    if excess(low) >= 0.0:
        return low
    if excess(high) <= 0.0:
        return high
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2.0
        if excess(middle) < 0.0:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


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
