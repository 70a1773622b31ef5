"""App fixtures: the web app on the real MLServer, nx-27017 and MLflow of the session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.integration.serving_fixtures import (
    DATASET,
    MAX_ROWS,
    REGISTERED_MODEL,
    ServedMLServer,
)

from telescore.app.main import create_app
from telescore.core.routing import RoutingConfig
from telescore.io.access_store import AccessStore
from telescore.io.prospect_store import ProspectStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs.access import add_user, create_api_key
from telescore.jobs.campaign import seed_prospects
from telescore.jobs.releases import set_routing
from telescore.settings import (
    ApiSettings,
    MlflowSettings,
    MongoSettings,
    ProjectSettings,
    ServingSettings,
    Settings,
)

SEEDED_PROSPECTS = 3000
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Keys:
    """API keys of each role, and a user of each role (password `PASSWORD`)."""

    caller: str
    ops: str
    caller_user: str
    ops_user: str


def app_settings(mlserver: ServedMLServer, mlflow_uri: str, state_dir: Path) -> Settings:
    """Settings of an app on the session's services (the prediction log's database)."""
    return Settings(
        project=ProjectSettings(state_dir=state_dir),
        mongodb=MongoSettings(uri=mlserver.mongodb_uri, database=mlserver.database),
        serving=ServingSettings(url=mlserver.rest_url),
        mlflow=MlflowSettings(tracking_uri=mlflow_uri, model_name=REGISTERED_MODEL),
        api=ApiSettings(batch_rows=MAX_ROWS),
    )


@pytest.fixture(scope="session")
def seeded(mlserver: ServedMLServer) -> int:
    """The prospects and first indicators, in the prediction log's database."""
    with ProspectStore(mlserver.mongodb_uri, mlserver.database) as store:
        stored, _ = seed_prospects(store, DATASET, SEEDED_PROSPECTS)
    return stored


@pytest.fixture(scope="session")
def keys(mlserver: ServedMLServer) -> Keys:
    """API keys and users of both roles."""
    suffix = uuid.uuid4().hex[:6]
    with AccessStore(mlserver.mongodb_uri, mlserver.database) as store:
        caller = create_api_key(store, "tests", "caller").key
        ops = create_api_key(store, "tests", "ops").key
        add_user(store, f"caller-{suffix}", PASSWORD, "caller")
        add_user(store, f"ops-{suffix}", PASSWORD, "ops")
    return Keys(caller, ops, f"caller-{suffix}", f"ops-{suffix}")


@pytest.fixture
def settings(
    mlserver: ServedMLServer, mlflow_tracking_uri: str, tmp_path: Path, seeded: int
) -> Settings:
    return app_settings(mlserver, mlflow_tracking_uri, tmp_path)


@pytest.fixture
def client(settings: Settings, mlserver: ServedMLServer) -> Iterator[TestClient]:
    """The app on the real services; routing back to champion only afterwards."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client
    with ReleaseStore(mlserver.mongodb_uri, mlserver.database) as store:
        set_routing(store, RoutingConfig(), "tests")
