"""The training pipeline as DVC stages: the flow's steps without MLflow, writing versioned files.

`dvc.yaml` runs these through `python -m telescore.cli_stages <stage>`. Each stage reads its
inputs from files and writes its outputs to the paths in `StagePaths`, which `dvc.yaml` names
too. Registration stays in the Prefect flow: a registry's state is not a file DVC can version.

Each stage runs in its own process, so start-up counts: MLflow is not imported at all (nor
`jobs.training`, which imports it), and scikit-learn and matplotlib only by the stages that use
them. The data gate needs neither.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib  # type: ignore[import-untyped]  # no stubs, and the mypy overrides omit it

from telescore.core.params import TrainingParams
from telescore.core.splits import chronological_split
from telescore.io.datasets import Dataset, source_from_params
from telescore.validation import great_expectations as gx_validator
from telescore.validation.base import ValidationFailedError, ValidationReport

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    Rows = tuple[pd.DataFrame, np.ndarray]


class StageInputError(RuntimeError):
    """A stage's input is missing, failed its gate, or belongs to other rows."""


@dataclass(frozen=True)
class StagePaths:
    """Where each stage writes, relative to the project root; dvc.yaml lists the same paths."""

    reports: Path = Path("reports")
    models: Path = Path("models")

    @property
    def data_validation(self) -> Path:
        """Verdict and figures of the Great Expectations gate."""
        return self.reports / "data_validation.json"

    @property
    def model(self) -> Path:
        """The fitted scikit-learn pipeline."""
        return self.models / "model.joblib"

    @property
    def metrics(self) -> Path:
        """Holdout and train metrics of the fitted model."""
        return self.reports / "metrics.json"

    @property
    def plots(self) -> Path:
        """Evaluation plots (PNG) and the calibration table (CSV) on the holdout period."""
        return self.reports / "plots"

    @property
    def model_validation(self) -> Path:
        """Verdict and figures of the Deepchecks gate."""
        return self.reports / "model_validation.json"


def _finite(value: float) -> float | None:
    # NaN is not JSON: a metric undefined on these rows (one class only) is written as null.
    return value if math.isfinite(value) else None


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Sorted keys and no timings: rerunning on the same inputs rewrites the same bytes.
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _load_rows(params: TrainingParams, root: Path) -> tuple[Dataset, Rows, Rows]:
    """Return the dataset and its (train, holdout) features and labels, split in time order."""
    from telescore.core.features import split_features_label

    dataset = source_from_params(params.data, root).load()
    train_rows, holdout_rows = chronological_split(dataset.frame, params.split)
    return dataset, split_features_label(train_rows), split_features_label(holdout_rows)


def _require_passed(path: Path, fingerprint: str) -> None:
    """Raise unless the gate report at `path` passed on exactly the rows with `fingerprint`."""
    if not path.exists():
        raise StageInputError(f"{path} is missing: run the validate-data stage first")
    verdict = json.loads(path.read_text())
    if not verdict.get("passed"):
        raise StageInputError(f"{path} records a failed data validation: refusing to train")
    if verdict.get("fingerprint") != fingerprint:
        # The params changed since validation: these rows were never validated.
        raise StageInputError(f"{path} validated other rows: rerun the validate-data stage")


def validate_data(
    params: TrainingParams, root: Path = Path(), paths: StagePaths = StagePaths()
) -> ValidationReport:
    """Validate the selected rows with Great Expectations, write the verdict; raise if they fail."""
    dataset = source_from_params(params.data, root).load()
    report = gx_validator.validate_rows(dataset.frame, root / paths.reports)
    _write_json(
        root / paths.data_validation,
        {
            "passed": report.passed,
            "rows": len(dataset.frame),
            "fingerprint": dataset.fingerprint,
            "suite_sha256": report.details["suite_sha256"],
            "failures": list(report.failures),
            **report.metrics,
        },
    )
    if not report.passed:
        raise ValidationFailedError(report)
    return report


def train(
    params: TrainingParams, root: Path = Path(), paths: StagePaths = StagePaths()
) -> dict[str, dict[str, float | None]]:
    """Fit on the earlier rows, evaluate on the most recent ones; write model, metrics, plots."""
    from telescore.core.features import build_pipeline
    from telescore.core.metrics import calibration_table, classification_metrics
    from telescore.jobs.plots import save_evaluation_plots

    dataset, (train_x, train_y), (holdout_x, holdout_y) = _load_rows(params, root)
    _require_passed(root / paths.data_validation, dataset.fingerprint)

    pipeline = build_pipeline(params.model).fit(train_x, train_y)
    holdout_scores = pipeline.predict_proba(holdout_x)[:, 1]
    train_scores = pipeline.predict_proba(train_x)[:, 1]
    metrics = {
        "holdout": {
            k: _finite(v) for k, v in classification_metrics(holdout_y, holdout_scores).items()
        },
        "train": {k: _finite(v) for k, v in classification_metrics(train_y, train_scores).items()},
    }

    (root / paths.models).mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, root / paths.model)
    _write_json(root / paths.metrics, metrics)
    plot_dir = root / paths.plots
    save_evaluation_plots(holdout_y, holdout_scores, plot_dir)
    with (plot_dir / "calibration.csv").open("w", newline="") as table:
        writer = csv.writer(table)
        writer.writerow(["mean_score", "actual_rate", "rows"])
        writer.writerows(calibration_table(holdout_y, holdout_scores))
    return metrics


def validate_model(
    params: TrainingParams, root: Path = Path(), paths: StagePaths = StagePaths()
) -> ValidationReport:
    """Run the Deepchecks gate on the trained model, write the verdict; raise if it fails."""
    from telescore.core.features import linear_feature_importance
    from telescore.validation import deepchecks as deepchecks_validator

    model_path = root / paths.model
    if not model_path.exists():
        raise StageInputError(f"{model_path} is missing: run the train stage first")
    _, train_rows, holdout_rows = _load_rows(params, root)
    # The file is this pipeline's own output, tracked by DVC: loading it runs no foreign code.
    pipeline = joblib.load(model_path)
    report = deepchecks_validator.validate_model(
        pipeline,
        train_rows,
        holdout_rows,
        params.validation,
        root / paths.reports,
        feature_importance=linear_feature_importance(pipeline),
    )
    _write_json(
        root / paths.model_validation,
        {"passed": report.passed, "failures": list(report.failures), **report.metrics},
    )
    if not report.passed:
        raise ValidationFailedError(report)
    return report
