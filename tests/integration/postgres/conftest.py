"""The PostgreSQL lane: MLflow's tracking and registry store and Prefect's database on a real
PostgreSQL cluster, as in production (docker-compose.yml, k8s/), all on free ports.

PostgreSQL comes from Debian's server binaries (`make tools`); a missing binary fails the lane,
saying so, instead of skipping it: a lane that silently did not run would read as a pass.
"""

from __future__ import annotations

import inspect
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import psycopg2
import pytest
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.asyncutils import run_coro_as_sync

from telescore.io.registry import Registry
from telescore.services import mlflow_auth
from telescore.services.embedded import mlflow_server, prefect_server
from telescore.services.postgres import (
    DEBIAN_BINARIES,
    PostgresNotInstalledError,
    PostgresServer,
    postgres_bin_dir,
    postgres_server,
)
from telescore.services.processes import free_port

ROLES_SCRIPT = Path(__file__).resolve().parents[3] / "k8s" / "base" / "postgres-roles.sh"
"""What the postgres image runs on its first start in compose and k8s: a role per database."""


@dataclass(frozen=True)
class DatabaseRoles:
    """The passwords of the roles the roles script creates (`mlflow`, `prefect`)."""

    mlflow: str
    prefect: str

    def uri(self, postgres: PostgresServer, role: str, database: str, driver: str) -> str:
        """The URI of `database` signed in as `role` (`mlflow` or `prefect`)."""
        password = getattr(self, role)
        return f"{driver}://{role}:{password}@{postgres.host}:{postgres.port}/{database}"


def create_database_roles(postgres: PostgresServer) -> DatabaseRoles:
    """Run k8s/base/postgres-roles.sh as the image would: as the superuser, on a new cluster."""
    roles = DatabaseRoles(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    completed = subprocess.run(
        ["bash", str(ROLES_SCRIPT)],
        env={
            "PATH": f"{postgres.bin_dir}:{os.environ['PATH']}",
            "POSTGRES_USER": postgres.role,
            "PGHOST": postgres.host,
            "PGPORT": str(postgres.port),
            "PGPASSWORD": postgres.password,
            "MLFLOW_DB_PASSWORD": roles.mlflow,
            "PREFECT_DB_PASSWORD": roles.prefect,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, f"the roles script failed:\n{completed.stderr}"
    return roles


@dataclass(frozen=True)
class PostgresPlatform:
    """PostgreSQL, and the MLflow and Prefect servers that keep their data in it."""

    postgres: PostgresServer
    mlflow_uri: str
    prefect_api_url: str
    state: Path
    """The state folder: the MLflow users' passwords are kept under it."""

    def query(self, database: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one SELECT on `database` directly (not through MLflow or Prefect)."""
        connection = psycopg2.connect(
            host=self.postgres.host,
            port=self.postgres.port,
            user=self.postgres.role,
            password=self.postgres.password,
            dbname=database,
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            connection.close()


def require_postgres_binaries(
    debian_root: Path = DEBIAN_BINARIES, search_path: str | None = None
) -> Path:
    """Return the PostgreSQL binaries' folder; fail the test, naming `make tools`, if absent."""
    try:
        return postgres_bin_dir(debian_root, search_path)
    except PostgresNotInstalledError as error:
        pytest.fail(str(error), pytrace=False)


async def drain_prefect_workers() -> None:
    """Send the flows' pending logs and events to the server (as prefect_test_harness does)."""
    try:
        drained = APILogWorker.instance().drain()
        if inspect.isawaitable(drained):
            await drained
    except RuntimeError:
        pass  # no log was ever sent: the worker never started
    drained = EventsWorker.drain_all()
    if inspect.isawaitable(drained):
        await drained


@pytest.fixture(scope="module")
def postgres_platform() -> Iterator[PostgresPlatform]:
    """PostgreSQL, then MLflow and a Prefect server on it; Prefect's client points at it.

    Module-scoped: the lane's tests share them, and the rest of a session does not keep them.
    """
    require_postgres_binaries()
    # Not under pytest's tmp folder: as root, postgres runs as `postgres`, which cannot enter
    # /tmp/pytest-of-root (0700). This folder lets it through (0711) without listing it.
    state = Path(tempfile.mkdtemp(prefix="telescore-postgres-"))
    state.chmod(0o711)
    # The orchestrator exports PREFECT_API_URL for the processes it starts: put it back after.
    exported_api_url = os.environ.get("PREFECT_API_URL")
    # No database of the superuser's: the roles script creates them, each owned by its role.
    postgres = postgres_server(state, free_port(), password=secrets.token_urlsafe(24), databases=())
    try:
        with postgres.running():
            roles = create_database_roles(postgres)
            mlflow_port, prefect_port = free_port(), free_port()
            # MLflow and Prefect sign in as their own roles, as in compose and k8s; MLflow's
            # users and permissions live in PostgreSQL too.
            tracking = mlflow_server(
                state,
                mlflow_port,
                backend_store_uri=roles.uri(postgres, "mlflow", "mlflow", "postgresql+psycopg2"),
                auth_database_uri=roles.uri(
                    postgres, "mlflow", "mlflow_auth", "postgresql+psycopg2"
                ),
            ).launch()
            orchestration = prefect_server(
                state,
                prefect_port,
                database_url=roles.uri(postgres, "prefect", "prefect", "postgresql+asyncpg"),
            ).launch()
            try:
                tracking.wait_healthy()
                orchestration.wait_healthy()
                mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
                mlflow_auth.provision_embedded(mlflow_uri, state, "telemarketing", "telemarketing")
                api_url = f"http://127.0.0.1:{prefect_port}/api"
                # The flows run in this process: their client talks to this server.
                with temporary_settings(updates={PREFECT_API_URL: api_url}):
                    yield PostgresPlatform(postgres, mlflow_uri, api_url, state)
                    # Else the flows' logs and events are sent to a stopped server, with
                    # retries, for minutes after the last test.
                    run_coro_as_sync(drain_prefect_workers())
            finally:
                orchestration.stop()
                tracking.stop()
    finally:
        shutil.rmtree(state, ignore_errors=True)
        if exported_api_url is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = exported_api_url


@pytest.fixture
def postgres_registry(
    postgres_platform: PostgresPlatform, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Registry]:
    """A registry on the PostgreSQL-backed MLflow with a model name of this test's own."""
    name = f"telemarketing-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TELESCORE_MLFLOW_TRACKING_URI", postgres_platform.mlflow_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_platform.mlflow_uri)
    for variable, value in mlflow_auth.writer(postgres_platform.state).env().items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("TELESCORE_MLFLOW_MODEL_NAME", name)
    monkeypatch.setenv("TELESCORE_MLFLOW_EXPERIMENT", "telemarketing-postgres")
    monkeypatch.setenv("TELESCORE_PREFECT_API_URL", postgres_platform.prefect_api_url)
    # A Registry sets MLflow's process-wide URIs: later tests must not talk to this server.
    tracking_uri, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield Registry(postgres_platform.mlflow_uri, name, "telemarketing-postgres")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
