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
from telescore.core.scoring import LOGIT_OFFSET_TAG, fit_logit_offset
from telescore.core.splits import chronological_split
from telescore.io.datasets import Dataset, source_from_params, with_production_rows, write_snapshot
from telescore.io.outcome_store import OutcomeStore
from telescore.io.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    ModelVersionRef,
    Registry,
    git_commit,
)
from telescore.jobs.plots import save_evaluation_plots
from telescore.settings import MongoSettings
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


SNAPSHOT_ARTIFACT = "data/training_rows.csv.gz"
"""Where a run keeps exactly the rows it used, in its MLflow artifacts."""


def ingest(
    params: TrainingParams,
    root: Path = Path(),
    mongodb: MongoSettings | None = None,
    host: str = "127.0.0.1",
) -> Dataset:
    """Load the training rows named by the params, with their fingerprint.

    With `data.production.enabled`, the most recent labelled production rows from MongoDB
    follow the base rows (see `ProductionDataParams` for the rule).
    """
    base = source_from_params(params.data, root).load()
    production = params.data.production
    if not production.enabled:
        return base
    if mongodb is None:
        raise ValueError("data.production.enabled needs the MongoDB settings")
    with OutcomeStore(mongodb.resolved_uri(host), mongodb.database) as store:
        rows = store.latest_labelled(production.max_rows or max(store.count(), 1))
    return with_production_rows(base, rows)


def validate_data(
    dataset: Dataset, registry: Registry, run_id: str, report_dir: Path
) -> ValidationReport:
    """Validate the rows with Great Expectations; log the report; raise if they fail."""
    report = gx_validator.validate_rows(dataset.frame, report_dir)
    snapshot = write_snapshot(dataset, report_dir / Path(SNAPSHOT_ARTIFACT).name)
    registry.log(
        run_id,
        metrics=report.metrics,
        tags={
            "data.fingerprint": dataset.fingerprint,
            "data.source": dataset.source,
            "data.rows": str(len(dataset.frame)),
            "data.production_rows": str(dataset.production_rows),
            "gx.suite_sha256": report.details["suite_sha256"],
            "gx.passed": str(report.passed),
            "gx.failures": "\n".join(report.failures)[:5000],
        },
        artifacts=[
            (str(Path(SNAPSHOT_ARTIFACT).parent), snapshot),
            *([("validation", report.artifact_path)] if report.artifact_path else []),
        ],
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
    registry: Registry,
    champion: ModelVersionRef | None,
    trained: TrainedModel,
    dataset: Dataset,
    metric: str,
) -> tuple[float | None, float]:
    """Score candidate and champion on the holdout rows neither trained on.

    Returns (champion score or None without a champion, candidate score). The candidate never
    saw the holdout. A champion trained on production rows saw those up to its last
    prediction id, so those rows are left out of both scores.
    """
    features, labels = trained.holdout
    candidate_scores = trained.pipeline.predict_proba(features)[:, 1]
    if champion is None:
        return None, classification_metrics(labels, candidate_scores)[metric]
    last_seen = registry.version_tags(champion).get("data_last_prediction_id")
    unseen = unseen_by(last_seen, dataset, len(labels))
    if not unseen.any():  # nothing newer: compare on all of it, which favours the champion
        unseen[:] = True
    model = registry.load_model(champion)
    champion_scores = model.predict_proba(features[unseen])[:, 1]
    return (
        classification_metrics(labels[unseen], champion_scores)[metric],
        classification_metrics(labels[unseen], candidate_scores[unseen])[metric],
    )


def unseen_by(last_seen_id: str | None, dataset: Dataset, holdout_rows: int) -> np.ndarray:
    """Return a mask of the holdout rows newer than a model's last trained production row."""
    mask = np.ones(holdout_rows, dtype=bool)
    if not last_seen_id or not dataset.production_ids:
        return mask
    # Production rows are the last rows, oldest first; ids sort as time does.
    ids = dataset.production_ids[-holdout_rows:]
    mask[holdout_rows - len(ids) :] = [each > last_seen_id for each in ids]
    # Base rows in the holdout are older than any production row: the champion may have seen them.
    mask[: holdout_rows - len(ids)] = False
    return mask


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


def registration_offset(pipeline: Any, dataset: Dataset, params: TrainingParams) -> dict[str, str]:
    """Return the tags of the log-odds offset fitted for a new model (none when it is off).

    Fitted on the newest `calibration.rows` rows of its data (with production rows, the newest
    labelled predictions, as the monitor fits it), so that a promoted model serves the
    current base rate from its first request rather than from the monitor's next run.
    """
    calibration = params.calibration
    if not calibration.enabled:
        return {}
    features, labels = split_features_label(dataset.frame.iloc[-calibration.rows :])
    if len(labels) < calibration.min_rows:
        return {}
    scores = pipeline.predict_proba(features)[:, 1]
    offset = fit_logit_offset(scores, labels, calibration.max_offset)
    return {
        LOGIT_OFFSET_TAG: repr(offset),
        f"{LOGIT_OFFSET_TAG}_rows": str(len(labels)),
        f"{LOGIT_OFFSET_TAG}_positive_rate": f"{labels.mean():.6f}",
        f"{LOGIT_OFFSET_TAG}_mean_raw_score": f"{scores.mean():.6f}",
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
    trigger: dict[str, Any] | None = None,
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
    champion_before = registry.alias_version(CHAMPION)
    champion_score, candidate_score = score_champion(
        registry, champion_before, trained, dataset, metric
    )
    decision: PromotionDecision = decide_promotion(
        candidate_score,
        champion_score,
        metric=metric,
        min_improvement=params.promotion.min_improvement,
    )
    if decision.promote and champion_before is not None and not params.promotion.auto_promote:
        decision = PromotionDecision(
            False, f"{decision.reason}; left as challenger for a release (auto_promote off)"
        )
    lineage = {
        "git_commit": git_commit(code_root),
        "data_fingerprint": dataset.fingerprint,
        "data_source": dataset.source,
        "data_snapshot": f"runs:/{run_id}/{SNAPSHOT_ARTIFACT}",
        "data_production_rows": str(dataset.production_rows),
        "data_last_prediction_id": dataset.last_prediction_id or "",
        **{f"trigger_{key}": str(value) for key, value in (trigger or {}).items()},
        "gx_suite_sha256": str(data_report.details["suite_sha256"]),
        **validation_lineage(data_report, model_report),
        "params": json.dumps(params.model_dump(mode="json"), sort_keys=True),
        f"holdout_{metric}": f"{candidate_score:.6f}",
        "promotion_decision": "promoted" if decision.promote else "kept champion",
        "promotion_reason": decision.reason,
        # Served with the model when it is champion (jobs.model_repository.champion_offset).
        **registration_offset(trained.pipeline, dataset, params),
    }
    version = registry.register(model_uri, run_id, lineage)
    registry.set_alias(CHALLENGER, version.version)
    if decision.promote:
        if champion_before is not None:
            registry.set_alias(PREVIOUS, champion_before.version)  # where a rollback goes
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
