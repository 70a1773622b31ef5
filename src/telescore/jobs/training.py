"""The training job: ingest, validate data, train, validate model, register, release.

`run_training` composes the steps in one MLflow run. `register` registers the candidate and
takes the offline gate (`core.promotion`: a point comparison with the champion on the
freshest holdout rows, and a paired DeLong test where they allow it). The first model ever
becomes champion there; a later one that passes goes to `release_candidate`, which starts a
shadow or canary release (`training.release`, `jobs.releases.start_release`) for the
`promote-telemarketing` deployment to decide on live outcomes, superseding any challenger
still undecided. The Prefect flow hands it the same steps
wrapped as its tasks (`TrainingSteps`), and the DVC stages (`jobs.stages`) run the steps that
need no registry, `fit`, `check_data`, `check_model` and `save_plots`, writing files instead.

Each DVC stage runs in its own process, so start-up counts: scikit-learn (`core.features`,
`core.metrics`), matplotlib and MLflow are imported inside the steps that use them, not here.
The data gate needs none of them (they would add about four seconds to its start-up).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from telescore.core.params import TrainingParams, apply_overrides
from telescore.core.promotion import PromotionDecision, decide_promotion, paired_auc_test
from telescore.core.splits import chronological_split
from telescore.io.datasets import Dataset, source_from_params, with_production_rows, write_snapshot
from telescore.validation.base import ValidationFailedError, ValidationReport
from telescore.validation.great_expectations import GreatExpectationsValidator

if TYPE_CHECKING:
    from telescore.io.context import Context
    from telescore.io.outcome_store import OutcomeStore
    from telescore.io.registry import ModelVersionRef, Registry

Rows = tuple[pd.DataFrame, np.ndarray]
"""Features and 0/1 labels."""
LOGGER = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A fitted pipeline, the rows it was fitted and evaluated on, and its evaluation."""

    pipeline: Any
    train: Rows
    holdout: Rows
    holdout_scores: np.ndarray
    evaluation: dict[str, dict[str, float]]
    """Classification metrics on the "holdout" and the "train" rows."""
    fit_seconds: float

    @property
    def metrics(self) -> dict[str, float]:
        """Return the evaluation as one run logs it: holdout_roc_auc, train_roc_auc, ..."""
        flat = {
            f"{part}_{name}": value
            for part, values in self.evaluation.items()
            for name, value in values.items()
        }
        return flat | {"fit_seconds": self.fit_seconds}


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced and decided."""

    run_id: str
    version: ModelVersionRef | None
    promoted: bool
    """The new version became champion (the first model ever, or `release.mode: direct`)."""
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    production_rows: int = 0
    """Labelled production rows trained on, after the versioned rows."""
    release_mode: str | None = None
    """shadow or canary: the version passed the gate and is (or is to be) released so."""
    released: bool = False
    """The release started: the version is `challenger` and the routing sends it traffic."""
    superseded: str | None = None
    """The undecided challenger this release replaced, if any."""


SNAPSHOT_ARTIFACT = "data/training_rows.csv.gz"
"""Where a run keeps exactly the rows it used, in its MLflow artifacts."""


# -- the steps: no registry, shared with the DVC stages -------------------------------------------


def ingest(params: TrainingParams, root: Path, outcomes: OutcomeStore | None = None) -> Dataset:
    """Load the training rows named by the params, with their fingerprint.

    With `data.production.enabled`, the most recent labelled production rows from `outcomes`
    follow the base rows (see `ProductionDataParams` for the rule).
    """
    base = source_from_params(params.data, root).load()
    production = params.data.production
    if not production.enabled:
        return base
    if outcomes is None:
        raise ValueError("data.production.enabled needs the outcome store")
    rows = outcomes.latest_labelled(production.max_rows or max(outcomes.count(), 1))
    return with_production_rows(base, rows)


def split_rows(dataset: Dataset, params: TrainingParams) -> tuple[Rows, Rows]:
    """Return the (train, holdout) features and labels: the most recent period is held out."""
    from telescore.core.features import split_features_label

    train_rows, holdout_rows = chronological_split(dataset.frame, params.split)
    return split_features_label(train_rows), split_features_label(holdout_rows)


def check_data(dataset: Dataset, report_dir: Path) -> ValidationReport:
    """Run the Great Expectations suite on the rows; write its report into `report_dir`."""
    return GreatExpectationsValidator().validate(dataset.frame, report_dir=report_dir)


def fit(dataset: Dataset, params: TrainingParams) -> TrainedModel:
    """Fit on the earlier rows; evaluate on them and on the most recent period."""
    from telescore.core.features import build_pipeline
    from telescore.core.metrics import classification_metrics

    train_xy, holdout_xy = split_rows(dataset, params)
    pipeline = build_pipeline(params.model)
    started = time.perf_counter()
    pipeline.fit(*train_xy)
    fit_seconds = time.perf_counter() - started
    holdout_scores = pipeline.predict_proba(holdout_xy[0])[:, 1]
    train_scores = pipeline.predict_proba(train_xy[0])[:, 1]
    evaluation = {
        "holdout": classification_metrics(holdout_xy[1], holdout_scores),
        "train": classification_metrics(train_xy[1], train_scores),
    }
    return TrainedModel(pipeline, train_xy, holdout_xy, holdout_scores, evaluation, fit_seconds)


def save_plots(trained: TrainedModel, plot_dir: Path) -> list[Path]:
    """Write the ROC, precision-recall and calibration plots on the holdout; return their paths."""
    from telescore.jobs.plots import save_evaluation_plots

    return save_evaluation_plots(trained.holdout[1], trained.holdout_scores, plot_dir)


def check_model(
    pipeline: Any, train: Rows, holdout: Rows, params: TrainingParams, report_dir: Path
) -> ValidationReport:
    """Run the Deepchecks suite on a fitted pipeline; write its report into `report_dir`."""
    from telescore.core.features import linear_feature_importance
    from telescore.validation.deepchecks import DeepchecksValidator, labelled_rows

    validator = DeepchecksValidator(
        pipeline, params.validation, feature_importance=linear_feature_importance(pipeline)
    )
    return validator.validate(
        labelled_rows(*holdout), reference=labelled_rows(*train), report_dir=report_dir
    )


def require_passed(report: ValidationReport) -> ValidationReport:
    """Return the report of a gate that passed; raise `ValidationFailedError` otherwise."""
    if not report.passed:
        raise ValidationFailedError(report)
    return report


# -- the steps of a run: each logs to it ----------------------------------------------------------


def validate_data(
    dataset: Dataset, registry: Registry, run_id: str, report_dir: Path
) -> ValidationReport:
    """Validate the rows with Great Expectations; log the report; raise if they fail."""
    report = check_data(dataset, report_dir)
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
    return require_passed(report)


def train(
    dataset: Dataset, params: TrainingParams, registry: Registry, run_id: str, plot_dir: Path
) -> TrainedModel:
    """Fit on the earlier rows, evaluate on the most recent period, log metrics and plots."""
    trained = fit(dataset, params)
    registry.log(
        run_id,
        params=params.flat(),
        metrics=trained.metrics,
        artifacts=[("plots", path) for path in save_plots(trained, plot_dir)],
    )
    return trained


def validate_model(
    trained: TrainedModel, params: TrainingParams, registry: Registry, run_id: str, report_dir: Path
) -> ValidationReport:
    """Run the Deepchecks gate on the fitted model; log the report; raise if it fails."""
    report = check_model(trained.pipeline, trained.train, trained.holdout, params, report_dir)
    registry.log(
        run_id,
        metrics=report.metrics,
        tags={
            "deepchecks.passed": str(report.passed),
            "deepchecks.failures": "\n".join(report.failures)[:5000],
        },
        artifacts=[("validation", report.artifact_path)] if report.artifact_path else (),
    )
    return require_passed(report)


@dataclass(frozen=True)
class FreshComparison:
    """Candidate and champion scored on the same holdout rows, those the champion never saw."""

    champion_score: float | None
    """The champion's `metric` on them; None without a champion."""
    candidate_score: float
    labels: np.ndarray
    champion_scores: np.ndarray | None
    candidate_scores: np.ndarray


def score_champion(
    registry: Registry,
    champion: ModelVersionRef | None,
    trained: TrainedModel,
    dataset: Dataset,
    metric: str,
) -> FreshComparison:
    """Score candidate and champion on the holdout rows neither trained on.

    The candidate never saw the holdout. A champion trained on production rows saw those up to
    its last prediction id, so those rows are left out of both scores.
    """
    from telescore.core.metrics import classification_metrics

    features, labels = trained.holdout
    candidate_scores = trained.holdout_scores
    if champion is None:
        score = classification_metrics(labels, candidate_scores)[metric]
        return FreshComparison(None, score, labels, None, candidate_scores)
    last_seen = registry.version_tags(champion).get("data_last_prediction_id")
    unseen = unseen_by(last_seen, dataset, len(labels))
    if not unseen.any():  # nothing newer: compare on all of it, which favours the champion
        unseen[:] = True
    model = registry.load_model(champion)
    champion_scores = model.predict_proba(features[unseen])[:, 1]
    fresh_labels = labels[unseen]
    return FreshComparison(
        classification_metrics(fresh_labels, champion_scores)[metric],
        classification_metrics(fresh_labels, candidate_scores[unseen])[metric],
        fresh_labels,
        champion_scores,
        candidate_scores[unseen],
    )


def gate_candidate(comparison: FreshComparison, params: TrainingParams) -> PromotionDecision:
    """Take the offline gate: the point comparison, and the paired test where the rows allow."""
    promotion = params.promotion
    test, note = None, ""
    if comparison.champion_scores is not None:
        test, note = paired_auc_test(
            comparison.labels,
            comparison.champion_scores,
            comparison.candidate_scores,
            confidence=promotion.confidence,
            min_rows_per_class=promotion.min_test_rows_per_class,
        )
    return decide_promotion(
        comparison.candidate_score,
        comparison.champion_score,
        metric=promotion.metric,
        min_improvement=promotion.min_improvement,
        test=test,
        test_note=note,
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
    from telescore.core.features import split_features_label
    from telescore.core.scoring import LOGIT_OFFSET_TAG, fit_logit_offset

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
    trigger: Mapping[str, Any] | None = None,
) -> TrainingResult:
    """Log and register the model and take the offline gate; the first model becomes champion.

    A later candidate that passes is left for `release_candidate` (`release_mode` set), or made
    champion at once with `release.mode: direct`; one that fails gets no alias.
    """
    from telescore.core.features import feature_ranges
    from telescore.io.registry import CHALLENGER, CHAMPION, PREVIOUS, git_commit

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
    comparison = score_champion(registry, champion_before, trained, dataset, metric)
    decision = gate_candidate(comparison, params)
    # The first model ever is champion at once (nothing to compare it with, nothing serving);
    # a later one that passes the gate is released, unless the params say `direct`.
    direct = champion_before is None or params.release.mode == "direct"
    promote = decision.promote and direct
    release_mode = params.release.mode if decision.promote and not direct else None
    outcome = "kept champion"
    if promote or release_mode:
        outcome = "promoted" if promote else f"{release_mode} release"
    test = decision.test
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
        f"holdout_{metric}": f"{comparison.candidate_score:.6f}",
        "promotion_decision": outcome,
        "promotion_reason": decision.reason,
        **({"promotion_test": test.verdict} if test is not None else {}),
        # Served with the model when it is champion (jobs.model_repository.champion_offset).
        **registration_offset(trained.pipeline, dataset, params),
    }
    version = registry.register(model_uri, run_id, lineage)
    if promote:
        registry.set_alias(CHALLENGER, version.version)
        if champion_before is not None:
            registry.set_alias(PREVIOUS, champion_before.version)  # where a rollback goes
        registry.set_alias(CHAMPION, version.version)
    metrics = {}
    if comparison.champion_score is not None:
        metrics["champion_holdout_score"] = comparison.champion_score
    if test is not None:
        metrics |= {
            "gate_auc_difference": test.difference,
            "gate_auc_difference_low": test.low or 0.0,
            "gate_auc_difference_high": test.high or 0.0,
        }
    registry.log(
        run_id,
        metrics=metrics or None,
        tags={
            "promotion.decision": outcome,
            "promotion.reason": decision.reason,
            "promotion.previous_champion": champion_before.version if champion_before else "none",
            "registered.version": version.version,
        },
    )
    return TrainingResult(
        run_id,
        version,
        promote,
        decision.reason,
        trained.metrics,
        dataset.production_rows,
        release_mode=release_mode,
    )


def release_candidate(
    ctx: Context, result: TrainingResult, params: TrainingParams, by: str = "train-telemarketing"
) -> TrainingResult:
    """Start the release of a candidate that passed the gate (a no-op for any other result).

    The same job a person's release runs (`jobs.releases.start_release`): the version becomes
    `challenger`, the routing becomes `release.mode`, and an undecided challenger is superseded.
    """
    from telescore.core.routing import RoutingConfig
    from telescore.jobs.releases import start_release

    if result.release_mode is None or result.version is None:
        return result
    config = RoutingConfig(mode=result.release_mode, canary_weight=params.release.canary_weight)
    started = start_release(ctx, result.version.version, config, by)
    ctx.registry.log(
        result.run_id,
        tags={
            "release.mode": started.mode,
            "release.routing_revision": str(started.routing_revision),
            "release.superseded": started.superseded or "none",
        },
    )
    superseded = ""
    if started.superseded:
        superseded = f"; superseded undecided challenger {started.superseded}"
    return replace(
        result,
        released=True,
        superseded=started.superseded,
        reason=f"{result.reason}; challenger in a {started.mode} release{superseded}",
    )


# -- the composition ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSteps:
    """The steps `run_training` composes: these functions, or a flow's tasks wrapping them."""

    ingest: Callable[..., Dataset] = ingest
    validate_data: Callable[..., ValidationReport] = validate_data
    train: Callable[..., TrainedModel] = train
    validate_model: Callable[..., ValidationReport] = validate_model
    register: Callable[..., TrainingResult] = register
    release: Callable[..., TrainingResult] = release_candidate


STEPS = TrainingSteps()


def run_training(
    ctx: Context,
    params: TrainingParams,
    root: Path,
    *,
    trigger: Mapping[str, Any] | None = None,
    steps: TrainingSteps = STEPS,
    logger: logging.Logger | logging.LoggerAdapter[Any] = LOGGER,
) -> TrainingResult:
    """Ingest, validate the data, train, validate the model, register and release, in one run.

    `trigger` says who asked and why (the monitor: its decision, window and reason); it is
    kept as tags on the run and the model version. A failed gate raises
    `ValidationFailedError`, and the run is recorded as failed.
    """
    registry = ctx.registry
    outcomes = None
    if params.data.production.enabled:
        from telescore.io.outcome_store import OutcomeStore

        outcomes = ctx.store(OutcomeStore)
    run_id = registry.start_run(
        "train-telemarketing",
        tags={f"trigger.{key}": str(value) for key, value in (trigger or {}).items()},
    )
    logger.info("MLflow run %s at %s", run_id, registry.tracking_uri)
    succeeded = False
    try:
        with tempfile.TemporaryDirectory(prefix="telescore-reports-") as work:
            reports = Path(work)
            dataset = steps.ingest(params, root, outcomes)
            data_report = steps.validate_data(dataset, registry, run_id, reports)
            trained = steps.train(dataset, params, registry, run_id, reports / "plots")
            model_report = steps.validate_model(trained, params, registry, run_id, reports)
            result = steps.register(
                trained, dataset, data_report, model_report, params, registry, run_id, root, trigger
            )
            if result.release_mode is not None:
                result = steps.release(ctx, result, params)
        succeeded = True
    finally:
        registry.end_run(run_id, succeeded)
    return result


def resolve_params(base: TrainingParams, overrides: dict[str, Any] | None) -> TrainingParams:
    """Return `base` with a run's overrides applied: known fields only, no guard relaxed."""
    return apply_overrides(base, overrides)
