"""Serving fixtures: two registered model versions and one MLServer serving their aliases.

Imported by `tests/integration/conftest.py`, so that serving, app and flow tests share them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from telescore.core.features import build_pipeline, feature_ranges, split_features_label
from telescore.core.params import ModelParams
from telescore.io.registry import Registry
from telescore.jobs.model_repository import ServerOptions, write_registry_repository
from telescore.services.mlserver import mlserver_process
from telescore.services.processes import ServiceProcess, free_port
from telescore.serving.options import RuntimeOptions

if TYPE_CHECKING:
    from tests.conftest import MlflowUsers

DATASET = Path(__file__).resolve().parents[2] / "data" / "bank-additional-full.csv.gz"
REGISTERED_MODEL = "telemarketing"
SAMPLE_ROWS = 4000
MAX_ROWS = 100
"""Batch limit of the served models: small, so the over-limit request stays small too."""


@dataclass(frozen=True)
class RegisteredVersions:
    """The registry as the serving tests find it."""

    name: str
    """Registered model name."""
    champion: str
    challenger: str
    features: pd.DataFrame
    """The sample the models were fitted on (inputs only)."""


@dataclass(frozen=True)
class ServedMLServer:
    """A running MLServer and where to reach it."""

    process: ServiceProcess
    rest_url: str
    grpc_target: str
    repository: Path
    mongodb_uri: str
    database: str
    """Database the prediction log writes to."""
    journal: Path
    """Journal root of the served models."""
    metrics_url: str
    max_rows: int
    """Batch limit of the served models."""
    control_token: str
    """What the model repository API (index, load, unload) requires."""


@pytest.fixture(scope="session")
def bank_sample() -> pd.DataFrame:
    """The most recent rows of the bank marketing dataset."""
    return pd.read_csv(DATASET, sep=";").tail(SAMPLE_ROWS).reset_index(drop=True)


def register_version(
    registry: Registry, features: pd.DataFrame, labels: object, params: ModelParams
) -> str:
    """Fit and register one version through the registry, as training does; return its number."""
    pipeline = build_pipeline(params).fit(features, labels)
    run_id = registry.start_run("serving-tests")
    model_uri = registry.log_model(
        run_id, pipeline, features, {"feature_ranges": feature_ranges(features)}
    )
    version = registry.register(model_uri, run_id, tags={}).version
    registry.end_run(run_id, succeeded=True)
    return version


@pytest.fixture(scope="session")
def registered_versions(mlflow_tracking_uri: str, bank_sample: pd.DataFrame) -> RegisteredVersions:
    """Two versions of `telemarketing`: champion (C=1) and challenger (C=0.01, other scores)."""
    registry = Registry(mlflow_tracking_uri, REGISTERED_MODEL, "serving-tests")
    features, labels = split_features_label(bank_sample)
    champion = register_version(registry, features, labels, ModelParams(C=1.0))
    challenger = register_version(registry, features, labels, ModelParams(C=0.01))
    registry.set_alias("champion", champion)
    registry.set_alias("challenger", challenger)
    return RegisteredVersions(
        name=REGISTERED_MODEL, champion=champion, challenger=challenger, features=features
    )


def mlserver_on_free_ports(
    folder: Path,
    tracking_uri: str,
    mongodb_uri: str,
    database: str,
    *,
    journal: Path | None = None,
    startup_timeout: float = 120.0,
    mlflow_env: Mapping[str, str] | None = None,
    registered_model: str = REGISTERED_MODEL,
    repository: Path | None = None,
) -> ServedMLServer:
    """An MLServer (not started) serving `registered_model`'s aliases from `folder`, on free ports.

    It serves `registered_model`'s aliases from `repository` (default: a folder in `folder`)
    and logs to `database`; rows ship at once, even while the test machine is busy: the tests
    wait for them. Start it with `.process.running()`. `mlflow_env` signs it in to MLflow
    (by default it inherits this process's credentials).
    """
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    repository = repository or folder / "mlserver-repository"
    journal = journal or folder / "journal"
    control_token = secrets.token_urlsafe(32)
    write_registry_repository(
        repository,
        Registry(tracking_uri, registered_model, "serving-tests"),
        ServerOptions(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port),
        RuntimeOptions(max_rows=MAX_ROWS, journal_dir=journal, ship_max_defer=0),
    )
    process = mlserver_process(
        folder,
        repository,
        http_port,
        grpc_port,
        metrics_port,
        tracking_uri,
        control_token=control_token,
        ready_models=["telemarketing", "telemarketing-challenger"],
        # Connection settings reach the runtime as they reach the CLI: from the environment
        # (and no developer's .env: the named file does not exist).
        env={
            "TELESCORE_MONGODB_URI": mongodb_uri,
            "TELESCORE_MONGODB_DATABASE": database,
            "TELESCORE_ENV_FILE": str(folder / "no.env"),
            **(mlflow_env or {}),
        },
        startup_timeout=startup_timeout,
    )
    return ServedMLServer(
        process=process,
        rest_url=f"http://127.0.0.1:{http_port}",
        grpc_target=f"127.0.0.1:{grpc_port}",
        repository=repository,
        mongodb_uri=mongodb_uri,
        database=database,
        journal=journal,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        max_rows=MAX_ROWS,
        control_token=control_token,
    )


@pytest.fixture(scope="session")
def mlserver(
    services_dir: Path,
    mlflow_tracking_uri: str,
    registered_versions: RegisteredVersions,
    mongodb: ServiceProcess,
    mlflow_users: MlflowUsers,
) -> Iterator[ServedMLServer]:
    """MLServer on free ports serving champion and challenger, logging to nx-27017.

    It signs in to MLflow as the reader, as `telescore serve` has it do.
    """
    served = mlserver_on_free_ports(
        services_dir,
        mlflow_tracking_uri,
        mongodb.uri,  # type: ignore[attr-defined]
        "serving_tests",
        journal=services_dir / "journal",
        mlflow_env=mlflow_users.reader.env(),
    )
    with served.process.running():
        yield served
