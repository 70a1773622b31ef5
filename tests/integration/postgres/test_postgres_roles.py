"""k8s/base/postgres-roles.sh on a real PostgreSQL: one role per database, none a superuser.

compose and k8s run it on PostgreSQL's first start; MLflow and Prefect then sign in as their
own role, so that a leaked MLflow password does not open Prefect's database, nor any role but
the operator's create roles or databases. (The lane's fixture runs MLflow and Prefect on them.)
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from tests.integration.postgres.conftest import (
    DatabaseRoles,
    create_database_roles,
    require_postgres_binaries,
)

from telescore.services.postgres import PostgresServer, postgres_server
from telescore.services.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[PostgresServer, DatabaseRoles]]:
    """A new PostgreSQL cluster (no database but the system's) after the roles script ran."""
    require_postgres_binaries()
    # As root, postgres runs as `postgres`: a folder it can enter (0711), not pytest's (0700).
    state = Path(tempfile.mkdtemp(prefix="telescore-roles-"))
    state.chmod(0o711)
    postgres = postgres_server(state, free_port(), password=secrets.token_urlsafe(24), databases=())
    with postgres.running():
        yield postgres, create_database_roles(postgres)


def _connect(postgres: PostgresServer, role: str, password: str, database: str) -> str | None:
    """Sign in as `role` to `database`: None when admitted, else PostgreSQL's refusal."""
    try:
        connection = psycopg2.connect(
            host=postgres.host,
            port=postgres.port,
            user=role,
            password=password,
            dbname=database,
            connect_timeout=10,
        )
    except psycopg2.OperationalError as refused:
        return str(refused)
    connection.close()
    return None


def test_each_role_signs_in_to_its_own_databases_only(
    cluster: tuple[PostgresServer, DatabaseRoles],
) -> None:
    # given the roles the script created, and the databases each owns
    postgres, roles = cluster
    own = {"mlflow": ("mlflow", "mlflow_auth"), "prefect": ("prefect",)}
    for role, databases in own.items():
        password = getattr(roles, role)
        # when the role signs in to each database
        for database in ("mlflow", "mlflow_auth", "prefect"):
            refusal = _connect(postgres, role, password, database)
            # then it is admitted to its own, and refused the other role's
            if database in databases:
                assert refusal is None, f"{role} was refused its database {database}: {refusal}"
            else:
                assert refusal is not None, f"{role} signed in to {database}, not its own"
                assert "permission denied" in refusal, f"{role} on {database}: {refusal}"


def test_no_service_role_is_a_superuser_or_may_create_roles_or_databases(
    cluster: tuple[PostgresServer, DatabaseRoles],
) -> None:
    # given the cluster after the script / when its roles' privileges are read
    postgres, _ = cluster
    connection = psycopg2.connect(
        host=postgres.host,
        port=postgres.port,
        user=postgres.role,
        password=postgres.password,
        dbname="postgres",
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles"
                " WHERE rolname IN ('mlflow', 'prefect') ORDER BY rolname"
            )
            privileges = cursor.fetchall()
            cursor.execute(
                "SELECT datname, pg_get_userbyid(datdba) FROM pg_database"
                " WHERE datname IN ('mlflow', 'mlflow_auth', 'prefect') ORDER BY datname"
            )
            owners = dict(cursor.fetchall())
    finally:
        connection.close()
    # then both exist and neither may do more than use its own databases, which it owns
    assert privileges == [("mlflow", False, False, False), ("prefect", False, False, False)], (
        f"the service roles' privileges (super, create role, create db): {privileges}"
    )
    assert owners == {"mlflow": "mlflow", "mlflow_auth": "mlflow", "prefect": "prefect"}, (
        f"database owners: {owners}"
    )


def test_a_role_owns_its_database_so_it_can_migrate_it(
    cluster: tuple[PostgresServer, DatabaseRoles],
) -> None:
    # given MLflow's role on its database (MLflow and Prefect create their tables on start)
    postgres, roles = cluster
    connection = psycopg2.connect(
        host=postgres.host,
        port=postgres.port,
        user="mlflow",
        password=roles.mlflow,
        dbname="mlflow_auth",
    )
    # when it creates a table in the public schema
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE migrated (id integer)")
            cursor.execute("SELECT count(*) FROM migrated")
            (count,) = cursor.fetchone()
    finally:
        connection.close()
    # then it may
    assert count == 0, "MLflow's role could not use the table it created"
