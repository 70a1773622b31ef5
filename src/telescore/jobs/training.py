"""The training job, step by step: ingest, validate data, train, validate model, register."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from telescore.core.features import (
    build_pipeline,
    feature_ranges,
    linear_feature_importance,
    split_features_label,
)
from telescore.core.metrics import classification_metrics
from telescore.core.params import TrainingParams
from telescore.core.promotion import PromotionDecision, decide_promotion
from telescore.core.splits import chronological_split
from telescore.io.datasets import Dataset, source_from_params
from telescore.io.registry import CHALLENGER, CHAMPION, ModelVersionRef, Registry, git_commit
from telescore.jobs.plots import save_evaluation_plots
from telescore.validation import deepchecks as deepchecks_validator
from telescore.validation import great_expectations as gx_validator
from telescore.validation.base import ValidationFailedError, ValidationReport


@dataclass
class TrainedModel:
    """A fitted pipeline with the rows it was fitted and evaluated on."""

    pipeline: Any
    train: tuple[pd.DataFrame, np.ndarray]
    holdout: tuple[pd.DataFrame, np.ndarray]
    metrics: dict[str, float]
    fit_seconds: float


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced and decided."""

    run_id: str
    version: ModelVersionRef | None
    promoted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)


def ingest(params: TrainingParams, root: Path = Path()) -> Dataset:
    """Load the training rows named by the params, with their fingerprint."""
    return source_from_params(params.data, root).load()


def validate_data(
    dataset: Dataset, registry: Registry, run_id: str, report_dir: Path
) -> ValidationReport:
    """Validate the rows with Great Expectations; log the report; raise if they fail."""
    report = gx_validator.validate_rows(dataset.frame, report_dir)
    registry.log(
        run_id,
        metrics=report.metrics,
        tags={
            "data.fingerprint": dataset.fingerprint,
            "data.source": dataset.source,
            "data.rows": str(len(dataset.frame)),
            "gx.suite_sha256": report.details["suite_sha256"],
            "gx.passed": str(report.passed),
            "gx.failures": "\n".join(report.failures)[:5000],
        },
        artifacts=[("validation", report.artifact_path)] if report.artifact_path else (),
    )
    if not report.passed:
        raise ValidationFailedError(report)
    return report


def train(
    dataset: Dataset, params: TrainingParams, registry: Registry, run_id: str, plot_dir: Path
) -> TrainedModel:
    """Fit on the earlier rows, evaluate on the most recent period, log metrics and plots."""
    train_rows, holdout_rows = chronological_split(dataset.frame, params.split)
    train_xy = split_features_label(train_rows)
    holdout_xy = split_features_label(holdout_rows)
    pipeline = build_pipeline(params.model)
    started = time.perf_counter()
    pipeline.fit(*train_xy)
    fit_seconds = time.perf_counter() - started

    holdout_scores = pipeline.predict_proba(holdout_xy[0])[:, 1]
    metrics = {
        f"holdout_{k}": v for k, v in classification_metrics(holdout_xy[1], holdout_scores).items()
    }
    train_scores = pipeline.predict_proba(train_xy[0])[:, 1]
    metrics |= {
        f"train_{k}": v for k, v in classification_metrics(train_xy[1], train_scores).items()
    }
    metrics["fit_seconds"] = fit_seconds
    registry.log(
        run_id,
        params=params.flat(),
        metrics=metrics,
        artifacts=[
            ("plots", path)
            for path in save_evaluation_plots(holdout_xy[1], holdout_scores, plot_dir)
        ],
    )
    return TrainedModel(pipeline, train_xy, holdout_xy, metrics, fit_seconds)


def validate_model(
    trained: TrainedModel, params: TrainingParams, registry: Registry, run_id: str, report_dir: Path
) -> ValidationReport:
    """Run the Deepchecks gate on the fitted model; log the report; raise if it fails."""
    report = deepchecks_validator.validate_model(
        trained.pipeline,
        trained.train,
        trained.holdout,
        params.validation,
        report_dir,
        feature_importance=linear_feature_importance(trained.pipeline),
    )
    registry.log(
        run_id,
        metrics=report.metrics,
        tags={
            "deepchecks.passed": str(report.passed),
            "deepchecks.failures": "\n".join(report.failures)[:5000],
        },
        artifacts=[("validation", report.artifact_path)] if report.artifact_path else (),
    )
    if not report.passed:
        raise ValidationFailedError(report)
    return report


def score_champion(
    registry: Registry, champion: ModelVersionRef | None, trained: TrainedModel, metric: str
) -> float | None:
    """Score the champion on the candidate's holdout; None when there is no champion."""
    if champion is None:
        return None
    model = registry.load_model(champion)
    features, labels = trained.holdout
    return classification_metrics(labels, model.predict_proba(features)[:, 1])[metric]


def _pass_count(passed: float, total: float, noun: str) -> str:
    return f"{int(passed)} of {int(total)} {noun} passed"


def validation_lineage(
    data_report: ValidationReport, model_report: ValidationReport
) -> dict[str, str]:
    """Return each validation gate's verdict and pass count, as tags for the model version."""
    # Only models that passed both gates are registered, so a verdict alone would always read
    # "passed": the counts show how much each gate checked, e.g. "8 of 8 conditions passed".
    expectations = data_report.metrics
    conditions = model_report.metrics
    # An errored Deepchecks check is counted among the failed conditions (see the adapter).
    passed_conditions = conditions["deepchecks_passed_conditions"]
    failed_conditions = conditions["deepchecks_failed_conditions"]
    return {
        "gx_verdict": "passed" if data_report.passed else "failed",
        "gx_expectations": _pass_count(
            expectations["gx_successful_expectations"],
            expectations["gx_evaluated_expectations"],
            "expectations",
        ),
        "deepchecks_verdict": "passed" if model_report.passed else "failed",
        "deepchecks_conditions": _pass_count(
            passed_conditions, passed_conditions + failed_conditions, "conditions"
        ),
    }


def register(
    trained: TrainedModel,
    dataset: Dataset,
    data_report: ValidationReport,
    model_report: ValidationReport,
    params: TrainingParams,
    registry: Registry,
    run_id: str,
    code_root: Path = Path(),
) -> TrainingResult:
    """Log and register the model, set `challenger`, and move `champion` if it wins."""
    features = trained.train[0]
    model_uri = registry.log_model(
        run_id,
        trained.pipeline,
        features.head(50),
        metadata={
            # The serving runtime flags rows outside the ranges the model was trained on.
            "feature_ranges": feature_ranges(features),
            "data_fingerprint": dataset.fingerprint,
            "training_rows": len(features),
        },
    )
    metric = params.promotion.metric
    candidate_score = trained.metrics[f"holdout_{metric}"]
    champion_before = registry.alias_version(CHAMPION)
    champion_score = score_champion(registry, champion_before, trained, metric)
    decision: PromotionDecision = decide_promotion(
        candidate_score,
        champion_score,
        metric=metric,
        min_improvement=params.promotion.min_improvement,
    )
    lineage = {
        "git_commit": git_commit(code_root),
        "data_fingerprint": dataset.fingerprint,
        "data_source": dataset.source,
        "gx_suite_sha256": str(data_report.details["suite_sha256"]),
        **validation_lineage(data_report, model_report),
        "params": json.dumps(params.model_dump(mode="json"), sort_keys=True),
        f"holdout_{metric}": f"{candidate_score:.6f}",
        "promotion_decision": "promoted" if decision.promote else "kept champion",
        "promotion_reason": decision.reason,
    }
    version = registry.register(model_uri, run_id, lineage)
    registry.set_alias(CHALLENGER, version.version)
    if decision.promote:
        registry.set_alias(CHAMPION, version.version)
    registry.log(
        run_id,
        metrics={"champion_holdout_score": champion_score} if champion_score is not None else None,
        tags={
            "promotion.decision": lineage["promotion_decision"],
            "promotion.reason": decision.reason,
            "promotion.previous_champion": champion_before.version if champion_before else "none",
            "registered.version": version.version,
        },
    )
    return TrainingResult(run_id, version, decision.promote, decision.reason, trained.metrics)


def resolve_params(base: TrainingParams, overrides: dict[str, Any] | None) -> TrainingParams:
    """Return `base` with per-section overrides applied and validated again."""
    if not overrides:
        return base
    merged = base.model_dump()
    for section, values in overrides.items():
        if section not in merged or not isinstance(values, dict):
            raise ValueError(f"unknown params section {section!r}")
        merged[section] |= values
    return TrainingParams.model_validate(merged, strict=False)
