"""Prefect flow `train-telemarketing`: ingest, validate data, train, validate model, register."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from telescore.core.params import TrainingParams, load_params
from telescore.io.datasets import Dataset
from telescore.io.registry import Registry
from telescore.jobs import serving, training
from telescore.settings import Settings, load_settings
from telescore.validation.base import ValidationReport

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@task(name="ingest", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def ingest(params: TrainingParams, root: Path, settings: Settings) -> Dataset:
    """Read the versioned rows and any production rows (reading twice is harmless: retried)."""
    return training.ingest(params, root, settings.mongodb, settings.project.host)


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(
    dataset: Dataset, registry: Registry, run_id: str, report_dir: Path
) -> ValidationReport:
    """Great Expectations gate."""
    return training.validate_data(dataset, registry, run_id, report_dir)


@task(name="train", cache_policy=NO_CACHE)
def train(
    dataset: Dataset, params: TrainingParams, registry: Registry, run_id: str, plot_dir: Path
) -> training.TrainedModel:
    """Fit and evaluate on the most recent period."""
    return training.train(dataset, params, registry, run_id, plot_dir)


@task(name="validate-model", cache_policy=NO_CACHE)
def validate_model(
    trained: training.TrainedModel,
    params: TrainingParams,
    registry: Registry,
    run_id: str,
    report_dir: Path,
) -> ValidationReport:
    """Deepchecks gate."""
    return training.validate_model(trained, params, registry, run_id, report_dir)


@task(name="register", cache_policy=NO_CACHE)
def register(
    trained: training.TrainedModel,
    dataset: Dataset,
    data_report: ValidationReport,
    model_report: ValidationReport,
    params: TrainingParams,
    registry: Registry,
    run_id: str,
    root: Path,
    trigger: dict[str, Any] | None,
) -> training.TrainingResult:
    """Register and decide promotion (not retried: a retry could register twice)."""
    return training.register(
        trained, dataset, data_report, model_report, params, registry, run_id, root, trigger
    )


@task(name="serve-champion", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def serve_champion(settings: Settings) -> list[str]:
    """Serve the new champion here at once (every MLServer's reconciler serves it anyway)."""
    return [
        f"{each.model}: {each.previous_version} -> {each.version}"
        for each in serving.serve_new_champion(settings)
    ]


# Results persist so that `prefect deployment run` callers can read what was decided.
@flow(name="train-telemarketing", log_prints=True, persist_result=True)
def train_telemarketing(
    params_file: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, validate and register a telemarketing model; return what was decided.

    `trigger` says who asked and why (the monitor: its decision, window and reason); it is
    kept as tags on the run and the model version.
    """
    logger = get_run_logger()
    params = training.resolve_params(load_params(PROJECT_ROOT / params_file), overrides)
    settings = load_settings()
    registry = Registry.from_settings(settings.mlflow, settings.project.host)
    run_id = registry.start_run(
        "train-telemarketing",
        tags={f"trigger.{key}": str(value) for key, value in (trigger or {}).items()},
    )
    logger.info("MLflow run %s at %s", run_id, registry.tracking_uri)
    succeeded = False
    try:
        with tempfile.TemporaryDirectory(prefix="telescore-reports-") as work:
            reports = Path(work)
            dataset = ingest(params, PROJECT_ROOT, settings)
            data_report = validate_data(dataset, registry, run_id, reports)
            trained = train(dataset, params, registry, run_id, reports / "plots")
            model_report = validate_model(trained, params, registry, run_id, reports)
            result = register(
                trained,
                dataset,
                data_report,
                model_report,
                params,
                registry,
                run_id,
                PROJECT_ROOT,
                trigger,
            )
        succeeded = True
    finally:
        registry.end_run(run_id, succeeded)
    version = result.version.version if result.version else None
    logger.info("Registered %s version %s: %s", registry.model_name, version, result.reason)
    if result.promoted:
        # Without a person in the loop: each MLServer's reconciler follows the champion alias;
        # this only makes the local one quicker.
        logger.info(
            "Serving: %s",
            serve_champion(settings) or "left to the MLServer reconcilers (within seconds)",
        )
    return {
        "run_id": result.run_id,
        "model": registry.model_name,
        "version": version,
        "promoted": result.promoted,
        "reason": result.reason,
        "holdout_roc_auc": result.metrics.get("holdout_roc_auc"),
        "production_rows": dataset.production_rows,
    }
