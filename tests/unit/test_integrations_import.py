"""Every integration is installed as telescore calls it: a bad upgrade fails here, not in use."""

import importlib
import operator
import os
from importlib.metadata import version
from pathlib import Path

import pytest
import typer

from telescore.services.processes import console_script

APIS = [
    ("mlserver", "MLModel"),
    ("mlserver_mlflow", "MLflowRuntime"),
    ("prefect", "flow"),
    ("prefect", "task"),
    ("mlflow", "sklearn.log_model"),
    ("mlflow", "MlflowClient"),
    ("great_expectations", "get_context"),
    ("great_expectations", "ExpectationSuite"),
    ("deepchecks.tabular", "Suite"),
    ("deepchecks.tabular", "Dataset"),
    ("evidently", "Report"),
    ("evidently", "DataDefinition"),
    ("dvc.repo", "Repo"),
    ("pymongo", "MongoClient"),
    ("sklearn.pipeline", "Pipeline"),
    ("fastapi", "FastAPI"),
]
"""(module, attribute) pairs that telescore's code (and its DVC test: `dvc.repo`) calls."""
CONSOLE_SCRIPTS = ["mlflow", "prefect", "mlserver", "nx-27017", "evidently", "uvicorn", "dvc"]
"""The servers telescore starts as processes, and `dvc`, which `make` runs."""


@pytest.mark.parametrize(("module", "attribute"), APIS, ids=[".".join(each) for each in APIS])
def test_the_apis_telescore_calls_are_there(module: str, attribute: str) -> None:
    # Given the installed integration / When the name telescore uses is looked up
    found = operator.attrgetter(attribute)(importlib.import_module(module))

    # Then it is something telescore can call or subclass
    assert callable(found), f"{module}.{attribute} is {found!r}, not callable"


@pytest.mark.parametrize("name", CONSOLE_SCRIPTS)
def test_the_servers_telescore_starts_are_installed(name: str) -> None:
    # Given a server telescore runs as a process / Then its console script is there to run
    script = Path(console_script(name))
    assert script.is_file() and os.access(script, os.X_OK), f"{script} is not executable"


def test_our_entry_points_are_what_their_hosts_load() -> None:
    # Given our code that MLServer, Prefect and the shell load
    from mlserver import MLModel
    from pipelines.training import train_telemarketing
    from prefect import Flow

    from telescore.cli import app
    from telescore.serving.runtime import TelescoreRuntime

    # Then MLServer gets a runtime, Prefect a flow under its deployment's name, the shell a CLI
    assert issubclass(TelescoreRuntime, MLModel), "MLServer would not load the runtime"
    assert isinstance(train_telemarketing, Flow), "the training flow is not a Prefect flow"
    assert train_telemarketing.name == "train-telemarketing", train_telemarketing.name
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert {"up", "train", "serve", "monitor"} <= set(commands), sorted(commands)


def test_known_incompatibilities_are_avoided() -> None:
    # Given the installed versions / Then none is one a pinned integration breaks on
    major = lambda name: int(version(name).split(".")[0])  # noqa: E731
    assert major("numpy") < 2, "deepchecks 0.19 uses np.Inf, removed in numpy 2"
    assert major("pandas") < 3, "evidently 0.7 fails to import with pandas 3"
    assert tuple(map(int, version("uvloop").split(".")[:2])) < (0, 22), (
        "MLServer 1.7 workers crash with uvloop 0.22+"
    )
    assert tuple(map(int, version("scikit-learn").split(".")[:2])) < (1, 8), (
        "deepchecks 0.19 uses the removed 'max_error' scorer name"
    )
