"""MLflow's basic authentication: its config, its users and their permissions.

MLflow's `basic-auth` app keeps users and permissions in a database of its own. Anonymous
requests are refused (401). Every signed-in user may read, and may create an experiment or a
registered model (it then manages what it created). The configured experiment and registered
model are created by the administrator, and only the writer is given more than READ on them:
EDIT on the experiment, MANAGE on the registered model (a promotion or a rollback deletes the
`challenger` alias, which MLflow allows only with MANAGE). The reader's credentials (MLServer,
its reconciler, the app) cannot move an alias.

The embedded server's passwords are generated on first use and kept under
`<state_dir>/mlflow/credentials` (one file per user, readable by its owner only); compose and
Kubernetes give them from their secrets (`docker/mlflow-start.py`, `docker/mlflow-users.py`).
Talks to MLflow's REST API with urllib: only `telescore.io.registry` imports MLflow.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telescore.settings import MLFLOW_ADMIN, MLFLOW_READER, MLFLOW_WRITER, mlflow_password_file

PASSWORD_BYTES = 32
"""Random bytes per generated password (43 URL-safe characters)."""
FLASK_SECRET_KEY = "flask-secret-key"  # noqa: S105 - the name of the file that holds it
"""Signs the auth app's CSRF tokens on its UI forms; kept like a user's password."""
HTTP_OK = 200


@dataclass(frozen=True)
class MlflowUser:
    """A user of MLflow and its password."""

    username: str
    password: str = field(repr=False)

    def env(self) -> dict[str, str]:
        """Environment that signs a process in as this user: MLflow's variables and ours."""
        return {
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
            "TELESCORE_MLFLOW_USERNAME": self.username,
            "TELESCORE_MLFLOW_PASSWORD": self.password,
        }


def user(state_dir: Path, username: str) -> MlflowUser:
    """Return `username` with its password, generated and kept under the state folder once."""
    path = mlflow_password_file(state_dir, username)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        # Created 0600 from the start: never readable by others, not even for an instant.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(PASSWORD_BYTES))
    return MlflowUser(username, path.read_text().strip())


def admin(state_dir: Path) -> MlflowUser:
    """The administrator: a person at the MLflow UI."""
    return user(state_dir, MLFLOW_ADMIN)


def writer(state_dir: Path) -> MlflowUser:
    """The flows that write: training, monitor, promotion (and the CLI that runs them)."""
    return user(state_dir, MLFLOW_WRITER)


def reader(state_dir: Path) -> MlflowUser:
    """What only reads: MLServer's runtime, its reconciler and the app's explanations."""
    return user(state_dir, MLFLOW_READER)


AUTH_CACHE_SECONDS = 60
"""How long MLflow remembers a checked login (its `auth_cache_ttl_seconds`; 0 = never)."""


def write_auth_config(path: Path, database_uri: str, admin_username: str = MLFLOW_ADMIN) -> Path:
    """Write the basic-auth app's config (`MLFLOW_AUTH_CONFIG_PATH`) to `path`, owner-only.

    The administrator's password is not in it: MLflow reads `MLFLOW_AUTH_ADMIN_PASSWORD` when
    its user store is empty, to create the administrator. `database_uri` may hold a password.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    # READ for every signed-in user: the reader needs nothing more, and anonymous gets nothing.
    # MLflow's configparser interpolates `%`: a URI's `%xx` escapes are doubled to stay as is.
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri.replace('%', '%%')}\n"
        f"admin_username = {admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # MLflow checks the password hash (scrypt, about 0.2 s of CPU) on every request, and
        # each reconciler asks every 2 s: a checked login is remembered for a minute, so a
        # changed or deleted user may still sign in for up to 60 s on another worker.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_SECONDS}\n"
    )
    return path


def server_env(state_dir: Path, database_uri: str | None = None) -> dict[str, str]:
    """Environment that turns the embedded MLflow's basic-auth app on.

    Its users and permissions go to `database_uri`, by default SQLite in the state folder.
    """
    root = (state_dir / "mlflow").resolve()
    config = write_auth_config(
        root / "basic_auth.ini", database_uri or f"sqlite:///{root / 'basic_auth.db'}"
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        # Read once, when the user store is empty: it creates the administrator.
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin(state_dir).password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": user(state_dir, FLASK_SECRET_KEY).password,
    }


class _AdminClient:
    """MLflow's REST API signed in as the administrator."""

    def __init__(self, url: str, admin: MlflowUser) -> None:
        self.url = url.rstrip("/")
        token = base64.b64encode(f"{admin.username}:{admin.password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Send one request; return its status and JSON answer (errors included)."""
        if method == "GET" and body:
            path = f"{path}?{urllib.parse.urlencode(body)}"
            body = None
        request = urllib.request.Request(  # noqa: S310 - the MLflow server's URL
            f"{self.url}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers=self.headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        try:
            return status, json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            return status, {"message": text.decode(errors="replace")[:200]}

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; raise unless it succeeded."""
        status, answer = self.call(method, path, body)
        if not HTTP_OK <= status < HTTP_OK + 100:
            raise RuntimeError(f"MLflow {method} {path} answered {status}: {answer}")
        return answer


def provision(
    url: str,
    admin: MlflowUser,
    writer: MlflowUser,
    reader: MlflowUser,
    model_name: str,
    experiment: str,
) -> None:
    """Create (or update) the writer and reader; give the writer its permissions.

    Signed in as `admin`. Idempotent: run on every `telescore up` and by compose's and
    Kubernetes' one-shot job; a user created before gets the password given now.
    """
    client = _AdminClient(url, admin)
    for each in (writer, reader):
        status, _ = client.call("GET", "/api/2.0/mlflow/users/get", {"username": each.username})
        credentials = {"username": each.username, "password": each.password}
        if status == HTTP_OK:
            client.ok("PATCH", "/api/2.0/mlflow/users/update-password", credentials)
        else:
            client.ok("POST", "/api/2.0/mlflow/users/create", credentials)
    experiment_id = _ensure_experiment(client, experiment)
    _ensure_registered_model(client, model_name)
    # The writer logs runs (EDIT on the experiment, which it cannot delete), registers versions
    # and moves aliases. MLflow has no level between EDIT and MANAGE that may delete an alias,
    # and the promotion and the rollback delete `challenger`: MANAGE on the registered model.
    _grant(client, writer.username, "experiment", experiment_id, "EDIT")
    _grant(client, writer.username, "registered_model", model_name, "MANAGE")


def provision_embedded(url: str, state_dir: Path, model_name: str, experiment: str) -> None:
    """`provision` the embedded server with the passwords kept under the state folder."""
    provision(url, admin(state_dir), writer(state_dir), reader(state_dir), model_name, experiment)


def _ensure_experiment(client: _AdminClient, name: str) -> str:
    status, found = client.call(
        "GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name}
    )
    if status == HTTP_OK:
        return str(found["experiment"]["experiment_id"])
    return str(
        client.ok("POST", "/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"]
    )


def _ensure_registered_model(client: _AdminClient, name: str) -> None:
    status, _ = client.call("GET", "/api/2.0/mlflow/registered-models/get", {"name": name})
    if status != HTTP_OK:
        client.ok("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})


def _grant(
    client: _AdminClient, username: str, resource_type: str, resource_id: str, permission: str
) -> None:
    grant = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
    status, answer = client.call(
        "POST", "/api/3.0/mlflow/users/permissions/grant", grant | {"permission": permission}
    )
    if answer.get("error_code") == "RESOURCE_ALREADY_EXISTS":
        # Granted by an earlier run, maybe at another level: put this one back.
        client.ok("POST", "/api/3.0/mlflow/users/permissions/revoke", grant)
        status, answer = client.call(
            "POST", "/api/3.0/mlflow/users/permissions/grant", grant | {"permission": permission}
        )
    if not HTTP_OK <= status < HTTP_OK + 100:
        refused = f"{permission} on {resource_type} {resource_id}"
        raise RuntimeError(f"MLflow refused {refused}: {answer}")
