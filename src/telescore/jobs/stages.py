"""The training pipeline as DVC stages: `jobs.training`'s steps without MLflow, writing files.

`dvc.yaml` runs these through `python -m telescore.cli_stages <stage>`. Each stage reads its
inputs from files, runs the steps of `jobs.training` (the data gate, the fit and plots, the
model gate) and writes their outputs to the paths in `StagePaths`, which `dvc.yaml` names too.
Registration stays in the Prefect flow: a registry's state is not a file DVC can version, and
neither are the production rows in MongoDB, so the stages read the versioned rows alone.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]  # no stubs, and the mypy overrides omit it

from telescore.core.params import TrainingParams
from telescore.io.datasets import Dataset, source_from_params
from telescore.jobs import training
from telescore.validation.base import ValidationReport


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


def _versioned_rows(params: TrainingParams, root: Path) -> Dataset:
    """Return the rows the params select from the versioned data file."""
    return source_from_params(params.data, root).load()


def _require_validated(path: Path, fingerprint: str) -> None:
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
    dataset = _versioned_rows(params, root)
    report = training.check_data(dataset, root / paths.reports)
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
    return training.require_passed(report)


def train(
    params: TrainingParams, root: Path = Path(), paths: StagePaths = StagePaths()
) -> dict[str, dict[str, float | None]]:
    """Fit on the earlier rows, evaluate on the most recent ones; write model, metrics, plots."""
    from telescore.core.metrics import calibration_table

    dataset = _versioned_rows(params, root)
    _require_validated(root / paths.data_validation, dataset.fingerprint)
    trained = training.fit(dataset, params)
    metrics = {
        part: {name: _finite(value) for name, value in values.items()}
        for part, values in trained.evaluation.items()
    }
    (root / paths.models).mkdir(parents=True, exist_ok=True)
    joblib.dump(trained.pipeline, root / paths.model)
    _write_json(root / paths.metrics, metrics)
    plot_dir = root / paths.plots
    training.save_plots(trained, plot_dir)
    with (plot_dir / "calibration.csv").open("w", newline="") as table:
        writer = csv.writer(table)
        writer.writerow(["mean_score", "actual_rate", "rows"])
        writer.writerows(calibration_table(trained.holdout[1], trained.holdout_scores))
    return metrics


def validate_model(
    params: TrainingParams, root: Path = Path(), paths: StagePaths = StagePaths()
) -> ValidationReport:
    """Run the Deepchecks gate on the trained model, write the verdict; raise if it fails."""
    model_path = root / paths.model
    if not model_path.exists():
        raise StageInputError(f"{model_path} is missing: run the train stage first")
    train_rows, holdout_rows = training.split_rows(_versioned_rows(params, root), params)
    # The file is this pipeline's own output, tracked by DVC: loading it runs no foreign code.
    pipeline = joblib.load(model_path)
    report = training.check_model(pipeline, train_rows, holdout_rows, params, root / paths.reports)
    _write_json(
        root / paths.model_validation,
        {"passed": report.passed, "failures": list(report.failures), **report.metrics},
    )
    return training.require_passed(report)
