"""Fixtures shared by all tests: real services started on free ports and torn down after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def mlflow_tracking_uri(services_dir: Path) -> Iterator[str]:
    """An MLflow tracking server on SQLite on a free port; yields its URI and exports it."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    with mlflow_server(services_dir, port).running():
        os.environ["MLFLOW_TRACKING_URI"] = uri
        yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


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
