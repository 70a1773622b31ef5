"""Fixtures for flow, job, serving and app tests: Prefect, a model name per test, MLServer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

# Shared by the serving, app and flow tests; imported here so that pytest finds them.
from tests.integration.serving_fixtures import (  # noqa: F401
    bank_sample,
    mlserver,
    registered_versions,
)

from telescore.io.registry import Registry


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server on SQLite (start-up takes 10-30 s on two cores)."""
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def registry(
    mlflow_tracking_uri: str, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> Registry:
    """A registry on the test MLflow server with a model name of this test's own."""
    name = f"telemarketing-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TELESCORE_MLFLOW_TRACKING_URI", mlflow_tracking_uri)
    monkeypatch.setenv("TELESCORE_MLFLOW_MODEL_NAME", name)
    monkeypatch.setenv("TELESCORE_MLFLOW_EXPERIMENT", "telemarketing-tests")
    return Registry(mlflow_tracking_uri, name, "telemarketing-tests")
