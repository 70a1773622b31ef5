"""The `telescore` command: bring the platform up, train, and show where to look."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from telescore.io import orchestrator
from telescore.jobs import platform
from telescore.settings import Settings, load_settings

app = typer.Typer(
    help="telescore: rank telemarketing prospects and keep the model good.", no_args_is_help=True
)
console = Console()
PROJECT_ROOT = Path.cwd()


def _settings() -> Settings:
    return load_settings()


def _print_urls(urls: platform.PlatformUrls, settings: Settings) -> None:
    table = Table(title="telescore is up", show_header=False)
    table.add_row("MLflow UI", urls.mlflow)
    table.add_row("Prefect UI", urls.prefect)
    table.add_row("MongoDB", urls.mongodb)
    table.add_row("Logs", str(settings.project.state_dir / "logs"))
    console.print(table)


@app.command()
def up() -> None:
    """Start the embedded services, the Prefect worker, and register the deployments."""
    settings = _settings()
    with console.status("Starting MLflow, Prefect, MongoDB (nx-27017) and a Prefect worker..."):
        urls = platform.bring_up(settings, PROJECT_ROOT)
    _print_urls(urls, settings)
    console.print(
        f"Train from any terminal: [bold]prefect deployment run "
        f"'{orchestrator.TRAINING_DEPLOYMENT}'[/] (with PREFECT_API_URL={urls.prefect}/api)"
    )


@app.command()
def down() -> None:
    """Stop every service `telescore up` started."""
    stopped = platform.bring_down(_settings())
    console.print(f"Stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def train(
    params_file: Annotated[
        str, typer.Option(help="Params YAML, relative to the project.")
    ] = "params.yaml",
) -> None:
    """Run the training deployment on the worker and wait for its verdict."""
    settings = _settings()
    api_url = settings.prefect.resolved_api_url(settings.project.host)
    with console.status(f"Running {orchestrator.TRAINING_DEPLOYMENT} on the worker..."):
        outcome = orchestrator.run_deployment(
            orchestrator.TRAINING_DEPLOYMENT, api_url, parameters={"params_file": params_file}
        )
    console.print_json(json.dumps(outcome, default=str))
    if not outcome["completed"]:
        raise typer.Exit(code=1)


@app.command()
def demo() -> None:
    """Bring the platform up, run the training deployment once, and say where to look."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = _settings()
    with console.status("Starting MLflow, Prefect, MongoDB (nx-27017) and a Prefect worker..."):
        urls = platform.bring_up(settings, PROJECT_ROOT)
    console.print("[green]Services up.[/] Running the training deployment (about a minute)...")
    api_url = settings.prefect.resolved_api_url(settings.project.host)
    outcome = orchestrator.run_deployment(orchestrator.TRAINING_DEPLOYMENT, api_url)
    _print_urls(urls, settings)
    result = outcome.get("result") or {}
    table = Table(title="Training run", show_header=False)
    table.add_row("Prefect flow run", f"{urls.prefect}/runs/flow-run/{outcome['flow_run_id']}")
    table.add_row("State", outcome["state"])
    if result:
        name, version = result["model"], result["version"]
        table.add_row("Registered model", f"{urls.mlflow}/#/models/{name}/versions/{version}")
        table.add_row("Aliases", "challenger" + (", champion" if result["promoted"] else ""))
        table.add_row("Decision", result["reason"])
        table.add_row("Holdout ROC AUC", f"{result['holdout_roc_auc']:.4f}")
    console.print(table)
    if not outcome["completed"]:
        console.print(
            f"[red]Training did not complete[/]; see {settings.project.state_dir / 'logs'}"
        )
        raise typer.Exit(code=1)
    console.print("Stop everything with [bold]telescore down[/].")
