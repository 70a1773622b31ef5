"""`telescore stage ...`: the training pipeline's DVC stages, one command each.

`dvc.yaml` runs them as `python -m telescore.cli_stages <stage>`: that path imports neither
Prefect nor MLflow (the main CLI does), which keeps every `dvc repro` stage seconds faster.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from telescore.core.params import TrainingParams
from telescore.io.params_files import load_training_params
from telescore.jobs import stages
from telescore.validation.base import ValidationFailedError

stages_app = typer.Typer(
    help="Run one stage of the training pipeline, as `dvc repro` does (no MLflow run).",
    no_args_is_help=True,
)

ParamsFile = Annotated[
    Path, typer.Option("--params-file", help="Params YAML, relative to the project root.")
]


def _run(step: Callable[[TrainingParams], Any], params_file: Path) -> Any:
    """Run one stage on the validated params; turn a failed gate into exit code 1."""
    params = load_training_params(params_file)
    try:
        return step(params)
    except (ValidationFailedError, stages.StageInputError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from error


@stages_app.command("validate-data")
def validate_data(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Great Expectations gate on the rows the params select."""
    report = _run(stages.validate_data, params_file)
    typer.echo(report.summary())


@stages_app.command("train")
def train(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Fit on the earlier rows and evaluate on the most recent holdout."""
    metrics = _run(stages.train, params_file)
    holdout = metrics["holdout"]
    typer.echo(
        f"holdout ROC AUC {holdout['roc_auc']}, PR AUC {holdout['pr_auc']}, "
        f"top-decile lift {holdout['lift_top_decile']}"
    )


@stages_app.command("validate-model")
def validate_model(params_file: ParamsFile = Path("params.yaml")) -> None:
    """Deepchecks gate on the trained model."""
    report = _run(stages.validate_model, params_file)
    typer.echo(report.summary())


if __name__ == "__main__":
    stages_app()
