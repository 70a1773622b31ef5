"""The embedded defaults: how each service starts, where it keeps data, how it is checked."""

from __future__ import annotations

import secrets
from pathlib import Path

from telescore.services import mlflow_auth
from telescore.services.processes import ServiceProcess, console_script, http_ok, tcp_open

MLFLOW_ORIGIN_CHECKS = {
    "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE": "false",
    "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": "",
    "MLFLOW_SERVER_ALLOWED_HOSTS": "",
}
"""MLflow's own host and origin checks at their defaults, whatever the caller's environment
says (an inherited `*` would turn them off): a POST, PUT, PATCH or DELETE to its API from a
page of another origin is refused (403; loopback origins excepted, any port), and only
loopback and private addresses are answered as Host (DNS rebinding)."""


def mlflow_server(
    state_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    backend_store_uri: str | None = None,
    auth_database_uri: str | None = None,
) -> ServiceProcess:
    """MLflow tracking server and registry on SQLite, serving artifacts from a local folder.

    It runs MLflow's basic-auth app: anonymous requests are refused, the administrator's
    password is generated under the state folder, and `mlflow_auth.provision_embedded` creates the
    users the services sign in as once it is healthy.

    `backend_store_uri` puts the runs and the registry elsewhere (postgresql://...); it goes
    through the environment, so that its password is not on the command line.
    `auth_database_uri` puts the users and permissions elsewhere (SQLite in the state folder
    by default).
    """
    root = state_dir / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    store = {
        "MLFLOW_BACKEND_STORE_URI": backend_store_uri or f"sqlite:///{root.resolve() / 'mlflow.db'}"
    }
    return ServiceProcess(
        name="mlflow",
        command=[
            console_script("mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--artifacts-destination",
            str((root / "artifacts").resolve()),
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        health=http_ok(f"http://{host}:{port}/health"),
        log_path=state_dir / "logs" / "mlflow.log",
        # The GenAI job runner starts half a dozen consumer processes; telescore needs none.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        | store
        | mlflow_auth.server_env(state_dir, auth_database_uri)
        | MLFLOW_ORIGIN_CHECKS,
    )


def prefect_server(
    state_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    database_url: str | None = None,
    auth_string: str | None = None,
) -> ServiceProcess:
    """Prefect server (API and UI) on SQLite under the state folder.

    `database_url` puts its database elsewhere (postgresql+asyncpg://...). `auth_string`
    (`user:password`) is asked of every API call but the health check; the UI asks for it once.
    Cross-origin calls are allowed from the server's own UI only, and every write call needs
    a CSRF token (`Prefect-Csrf-Token`, `Prefect-Csrf-Client` headers).
    """
    home = prefect_home(state_dir)
    database = {"PREFECT_API_DATABASE_CONNECTION_URL": database_url} if database_url else {}
    auth = {"PREFECT_SERVER_API_AUTH_STRING": auth_string} if auth_string else {}
    origin = f"http://{host}:{port}"
    return ServiceProcess(
        name="prefect",
        command=[console_script("prefect"), "server", "start", "--host", host, "--port", str(port)],
        health=http_ok(f"{origin}/api/health"),
        log_path=state_dir / "logs" / "prefect.log",
        env=prefect_env(home, f"{origin}/api", auth_string)
        | {
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": f"{origin}/api",
            # Prefect answers CORS `*` by default: any page could read the API's answers.
            "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": origin,
            # Every POST, PUT, PATCH and DELETE needs a token from GET /api/csrf-token, which
            # the auth string opens (Prefect's clients and UI fetch it themselves).
            "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
        }
        | auth
        | database,
    )


def prefect_home(state_dir: Path) -> Path:
    """Return (and create) the PREFECT_HOME that the server, worker and clients share."""
    home = (state_dir / "prefect").resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def prefect_env(home: Path, api_url: str, auth_string: str | None = None) -> dict[str, str]:
    """Environment that points Prefect clients and servers at one home folder and API.

    `auth_string` is what clients send the server (`PREFECT_API_AUTH_STRING`).
    """
    auth = {"PREFECT_API_AUTH_STRING": auth_string} if auth_string else {}
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    } | auth


def mongodb_server(state_dir: Path, port: int, host: str = "127.0.0.1") -> ServiceProcess:
    """nx-27017: a MongoDB wire-protocol server on SQLite, the embedded stand-in for MongoDB."""
    data = (state_dir / "mongodb").resolve()
    data.mkdir(parents=True, exist_ok=True)
    return ServiceProcess(
        name="mongodb",
        command=[
            console_script("nx-27017"),
            "--data-dir",
            str(data),
            "--host",
            host,
            "--port",
            str(port),
            "--log-file",
            str((state_dir / "logs" / "mongodb-server.log").resolve()),
            "--pid-file",
            str(data / "nx-27017.pid"),
        ],
        health=tcp_open(host, port),
        log_path=state_dir / "logs" / "mongodb.log",
    )


def prefect_worker(
    state_dir: Path,
    api_url: str,
    pool: str,
    health_port: int,
    env: dict[str, str],
    cwd: Path,
    host: str = "127.0.0.1",
    auth_string: str | None = None,
) -> ServiceProcess:
    """A Prefect process worker polling `pool`; flow runs inherit `env` (service URIs).

    `auth_string` is sent to the API by the worker and, inherited, by every flow run.
    """
    home = prefect_home(state_dir)
    return ServiceProcess(
        name="prefect-worker",
        command=[
            console_script("prefect"),
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            "process",
            "--with-healthcheck",
        ],
        health=http_ok(f"http://{host}:{health_port}/health"),
        log_path=state_dir / "logs" / "prefect-worker.log",
        env=prefect_env(home, api_url, auth_string)
        | env
        | {
            # The worker's health server defaults to 8080, MLServer's port.
            "PREFECT_WORKER_WEBSERVER_HOST": host,
            "PREFECT_WORKER_WEBSERVER_PORT": str(health_port),
        },
        cwd=cwd,
    )


def evidently_ui(state_dir: Path, port: int, host: str = "127.0.0.1") -> ServiceProcess:
    """Evidently UI over the monitoring workspace that the monitor writes under the state folder."""
    workspace = (state_dir / "evidently").resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    return ServiceProcess(
        name="evidently",
        command=[
            console_script("evidently"),
            "ui",
            "--workspace",
            str(workspace),
            "--host",
            host,
            "--port",
            str(port),
        ],
        # Not /api/version: it answers before the workspace is read, which happens on the first
        # request for projects (and fails there if a snapshot is malformed).
        health=http_ok(f"http://{host}:{port}/api/projects", timeout=30.0),
        log_path=state_dir / "logs" / "evidently.log",
        env={
            # Evidently sends usage telemetry unless told not to.
            "DO_NOT_TRACK": "1",
            # Without a secret its write API (create, change or delete a project or snapshot)
            # answers anyone, a page's cross-site text/plain POST included. The monitor writes
            # the workspace's files itself, so nobody needs this one: a new one each start,
            # kept out of the arguments that `ps` shows.
            "EVIDENTLY_SECRET": secrets.token_urlsafe(32),
        },
    )


def outcomes_api(
    state_dir: Path, port: int, host: str = "127.0.0.1", env: dict[str, str] | None = None
) -> ServiceProcess:
    """The telescore API (call outcomes) under uvicorn; it reads its settings from `env`."""
    return ServiceProcess(
        name="outcomes-api",
        command=[
            console_script("uvicorn"),
            "--factory",
            "telescore.app.main:create_app",
            "--host",
            host,
            "--port",
            str(port),
            "--no-access-log",
        ],
        health=http_ok(f"http://{host}:{port}/health"),
        log_path=state_dir / "logs" / "outcomes-api.log",
        env=env or {},
        # The one process that signs sessions: it alone inherits the session key.
        app_secrets=True,
    )
