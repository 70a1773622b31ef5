"""Evidently (0.7) adapter: drift and quality of one monitoring window, as a report and a snapshot.

Evidently is imported inside functions only: importing it takes seconds, and its API breaks
between releases (0.4 to 0.7). This module, `evidently_metrics` (our own metrics, imported only
where they are used) and `evidently_dashboards` are the only ones that touch it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
import pandas as pd

from telescore.core.monitoring import DriftParams
from telescore.core.schema import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES
from telescore.validation.base import ValidationReport

SCORE: Final = "score"
"""Predicted probability of a subscription: the model's output for each row."""
LABEL: Final = "label"
"""Outcome, 1.0 or 0.0, or NaN while it is not known yet."""
TOP_FRACTION: Final = 0.1
"""Callers dial the best-scored decile first: its precision is what they feel."""
PREDICTION_QUANTILES: Final = (0.1, 0.5, 0.9)

QualityStatistic = Literal["roc_auc", "precision_top_decile", "positive_rate", "mean_score"]

# One model for drift settings: they are params (`monitoring.drift` in params.yaml), so they
# are validated in core; the adapter takes them as they are.
DriftOptions = DriftParams
"""How drift is measured: methods pinned, thresholds, dataset drift share."""


def as_utc(moment: datetime) -> datetime:
    """Return `moment` in UTC; refuse a naive datetime, whose zone is only a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no timezone: pass an aware datetime (UTC)")
    return moment.astimezone(UTC)


def quality_statistic(frame: pd.DataFrame, statistic: QualityStatistic) -> float | None:
    """Return one quality figure on the labelled rows of `frame`; None where it is undefined."""
    rows = frame[frame[LABEL].notna()]
    labels, scores = rows[LABEL].to_numpy(dtype=float), rows[SCORE].to_numpy(dtype=float)
    if len(labels) == 0:
        return None
    if statistic == "positive_rate":
        return float(labels.mean())
    if statistic == "mean_score":
        return float(scores.mean())
    if statistic == "precision_top_decile":
        # Stable sort, as core.metrics.lift_top_fraction: ties keep row order, figures repeat.
        top = max(1, round(len(labels) * TOP_FRACTION))
        return float(labels[np.argsort(-scores, kind="stable")[:top]].mean())
    if len(np.unique(labels)) < 2:
        return None  # ROC AUC ranks positives against negatives: one class has nothing to rank.
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


@dataclass(frozen=True)
class EvidentlyValidator:
    """A window of logged predictions (current) against the champion's training rows (reference).

    The report passes when neither the dataset (`drift_share` of the inputs) nor the score
    drifted; quality figures come from the labelled rows only and never decide the verdict. Its
    `tool_result` is the Evidently snapshot, dated to the window's start, for
    `MonitoringWorkspace.save_window`.
    """

    window_start: datetime
    window_end: datetime
    options: DriftOptions = field(default_factory=DriftOptions)

    def validate(
        self, current: pd.DataFrame, *, reference: pd.DataFrame | None = None, report_dir: Path
    ) -> ValidationReport:
        """Evaluate the window; write the HTML report under `report_dir`."""
        if reference is None:
            raise ValueError("Evidently compares the window with the training rows: none given")
        return _evaluate_window(
            reference, current, self.window_start, self.window_end, report_dir, self.options
        )


def _evaluate_window(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    window_start: datetime,
    window_end: datetime,
    report_dir: Path,
    options: DriftOptions,
) -> ValidationReport:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue, QuantileValue, RowCount, ValueDrift
    from evidently.presets import DataDriftPreset

    from telescore.validation.evidently_metrics import LabelCoverage, LabelledQuality

    start, end = as_utc(window_start), as_utc(window_end)
    if current.empty:
        raise ValueError(f"window {start.isoformat()} has no rows to evaluate")
    definition = DataDefinition(
        numerical_columns=[*NUMERIC_FEATURES, SCORE, LABEL],
        categorical_columns=list(CATEGORICAL_FEATURES),
        text_columns=[],
        datetime_columns=[],
        unknown_columns=[],
        list_columns=[],
    )
    # Quality figures that are undefined on this window (no labels, one class) are left out of
    # the snapshot rather than stored as NaN: dashboards show a gap, not a fake value.
    quality = [
        LabelledQuality(statistic=statistic)
        for statistic in get_args(QualityStatistic)
        if quality_statistic(current, statistic) is not None
    ]
    report = Report(
        [
            DataDriftPreset(
                columns=list(FEATURES),
                num_method=options.numerical_method,
                cat_method=options.categorical_method,
                num_threshold=options.numerical_threshold,
                cat_threshold=options.categorical_threshold,
                drift_share=options.drift_share,
            ),
            ValueDrift(
                column=SCORE, method=options.numerical_method, threshold=options.numerical_threshold
            ),
            # `tests=[]`: with a reference, Evidently's default test wants each figure within 10%
            # of the training rows' one, which a monitoring window has no reason to be.
            MeanValue(column=SCORE, tests=[]),
            *(QuantileValue(column=SCORE, quantile=q, tests=[]) for q in PREDICTION_QUANTILES),
            RowCount(tests=[]),
            LabelCoverage(),
            *quality,
        ],
        # Drift verdicts per column and for the dataset, kept in the snapshot as test results.
        include_tests=True,
    )
    # Evidently's drift table builds a correlation matrix: constant columns divide by 0, harmlessly.
    with np.errstate(divide="ignore", invalid="ignore"):
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
            timestamp=start,
            metadata={"window_start": start.isoformat(), "window_end": end.isoformat()},
            name=f"window {start.isoformat()}",
        )
    report_dir.mkdir(parents=True, exist_ok=True)
    artifact = report_dir / f"evidently-{start:%Y%m%dT%H%M%SZ}.html"
    # Not `snapshot.save_html(path)`: in 0.7.23 it silently writes nothing unless given a str.
    artifact.write_text(snapshot.get_html_str(as_iframe=False), encoding="utf-8")
    return _validation_report(snapshot, start, options, artifact)


def snapshot_metrics(snapshot: Any) -> dict[str, float]:
    """Return the figures of a snapshot (just run, or stored) under flat keys.

    All rows: `rows`, `share_drifted_features`, `drifted_features`, `drift.<input>` (its drift
    score), `prediction_drift`, `prediction_mean`, `prediction_p10|p50|p90`; `labelled_rows`,
    `label_coverage`. Labelled rows, where defined: `roc_auc`, `precision_top_decile`,
    `positive_rate`, `mean_score`. Once recorded: `retrain` (1.0 or 0.0). A release decision's
    snapshot holds only `release` (1.0 promote, 0.0 wait, -1.0 roll back).
    """
    metrics: dict[str, float] = {}
    for result in snapshot.metric_results.values():
        params = result.metric_value_location.metric.params
        kind = params["type"].rsplit(":", 1)[-1]
        if kind == "DriftedColumnsCount":
            metrics["drifted_features"] = float(result.count.value)
            metrics["share_drifted_features"] = float(result.share.value)
        elif kind == "ValueDrift":
            column = params["column"]
            key = "prediction_drift" if column == SCORE else f"drift.{column}"
            metrics[key] = float(result.value)
        elif kind == "MeanValue":
            metrics["prediction_mean"] = float(result.value)
        elif kind == "QuantileValue":
            metrics[f"prediction_p{round(params['quantile'] * 100):02d}"] = float(result.value)
        elif kind == "RowCount":
            metrics["rows"] = float(result.value)
        elif kind == "LabelCoverage":
            metrics["labelled_rows"] = float(result.count.value)
            metrics["label_coverage"] = float(result.share.value)
        elif kind == "LabelledQuality":
            metrics[params["statistic"]] = float(result.value)
        elif kind == "RetrainingDecision":
            metrics["retrain"] = float(result.value)
        elif kind == "ReleaseDecision":
            metrics["release"] = float(result.value)
    return metrics


def _validation_report(
    snapshot: Any, start: datetime, options: DriftOptions, artifact: Path
) -> ValidationReport:
    metrics = snapshot_metrics(snapshot)
    # Evidently's own verdict per column (its test), so that the report and the UI agree.
    drifted = [
        result.metric_value_location.metric.params["column"]
        for result in snapshot.metric_results.values()
        if result.metric_value_location.metric.params["type"].endswith(":ValueDrift")
        and any(test.status.value == "FAIL" for test in result.tests)
    ]
    inputs = [column for column in drifted if column != SCORE]
    failures: list[str] = []
    share = metrics["share_drifted_features"]
    if share >= options.drift_share:
        failures.append(
            f"dataset drift: {len(inputs)} of {len(FEATURES)} inputs drifted "
            f"({share:.2f} >= {options.drift_share:.2f}): {', '.join(inputs)}"
        )
    if SCORE in drifted:
        failures.append(
            f"prediction drift: column '{SCORE}' {options.numerical_method} "
            f"{metrics['prediction_drift']:.3f}, threshold {options.numerical_threshold}"
        )
    return ValidationReport(
        tool="evidently",
        passed=not failures,
        metrics=metrics,
        artifact_path=artifact,
        failures=tuple(failures),
        details={"drifted_features": inputs, "window_start": start.isoformat()},
        tool_result=snapshot,
    )
