"""Fixtures shared by all tests: real services started on free ports and torn down after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from telescore.services import mlflow_auth
from telescore.services.embedded import mlflow_server, mongodb_server
from telescore.services.processes import ServiceProcess, free_port

# Keep BLAS/OpenMP to one thread: two cores are shared by the services and the tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """State folder for the services this test session starts."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def mongodb(services_dir: Path) -> Iterator[ServiceProcess]:
    """A MongoDB wire-protocol server (nx-27017) on a free port; `.uri` holds its URI."""
    port = free_port()
    service = mongodb_server(services_dir, port)
    with service.running():
        service.uri = f"mongodb://127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield service


@dataclass(frozen=True)
class MlflowUsers:
    """The embedded MLflow's users, as `telescore up` creates them."""

    admin: mlflow_auth.MlflowUser
    writer: mlflow_auth.MlflowUser
    reader: mlflow_auth.MlflowUser


@pytest.fixture(scope="session")
def mlflow_users(services_dir: Path) -> MlflowUsers:
    """The users (and passwords) of the session's MLflow server."""
    return MlflowUsers(
        mlflow_auth.admin(services_dir),
        mlflow_auth.writer(services_dir),
        mlflow_auth.reader(services_dir),
    )


@pytest.fixture(scope="session")
def mlflow_tracking_uri(services_dir: Path, mlflow_users: MlflowUsers) -> Iterator[str]:
    """An MLflow server with basic auth on SQLite on a free port; yields its URI.

    It exports the URI and the writer's credentials: the tests train, register and promote
    as the flows do. MLServer is given the reader's.
    """
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    previous = {name: os.environ.get(name) for name in names}
    with mlflow_server(services_dir, port).running():
        mlflow_auth.provision_embedded(uri, services_dir, "telemarketing", "telemarketing")
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ["MLFLOW_TRACKING_USERNAME"] = mlflow_users.writer.username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = mlflow_users.writer.password
        yield uri
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def mlflow_uris_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put MLflow's process-wide URIs back after the test, unset included.

    A `Registry` points the process's MLflow (module globals and the environment, which child
    processes inherit) at its server: a test that opens one on another server must not leave
    later tests pointed there.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        previous = os.environ.get(name)
        monkeypatch.setenv(name, previous or "unset")  # recorded: undone after the test
        if previous is None:
            monkeypatch.delenv(name)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
