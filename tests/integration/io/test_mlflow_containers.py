"""MLflow as compose and Kubernetes start it: docker/mlflow-start.py, then docker/mlflow-users.py.

The same two scripts the image runs (`telescore-mlflow`, `telescore-mlflow-users`), here on
SQLite and a local artifact folder: anonymous writes are refused, the reader cannot change the
registered model, the writer can, and a page of another origin cannot, even with the writer's
credentials. The scripts refuse a placeholder before anything starts.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from telescore.services.processes import ServiceProcess, free_port, http_ok

pytestmark = pytest.mark.integration

DOCKER = Path(__file__).resolve().parents[3] / "docker"
PASSWORDS = {
    "MLFLOW_ADMIN_PASSWORD": "Admin7q2Xk9mP4vL8sN3tW6yB1cZ5hJ0d",
    "MLFLOW_WRITER_PASSWORD": "Writer7q2Xk9mP4vL8sN3tW6yB1cZ5hJ0",
    "MLFLOW_READER_PASSWORD": "Reader7q2Xk9mP4vL8sN3tW6yB1cZ5hJ0",
}
MODEL = "telemarketing-containers"
TAG_PATH = "/api/2.0/mlflow/registered-models/set-tag"


def _script_env(**extra: str) -> dict[str, str]:
    """This environment (PATH, PYTHONPATH: mlflow and telescore) without any MLflow user."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MLFLOW_", "TELESCORE_MLFLOW_", "AWS_"))
    }
    return inherited | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"} | extra


@pytest.fixture(scope="module")
def mlflow_container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MLflow started by docker/mlflow-start.py, its users set by docker/mlflow-users.py."""
    root = tmp_path_factory.mktemp("mlflow-container")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServiceProcess(
        name="mlflow-container",
        command=[
            sys.executable,
            str(DOCKER / "mlflow-start.py"),
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        health=http_ok(f"{url}/health"),
        log_path=root / "mlflow.log",
        env=_script_env(
            MLFLOW_BACKEND_STORE_URI=f"sqlite:///{root / 'mlflow.db'}",
            MLFLOW_AUTH_DATABASE_URI=f"sqlite:///{root / 'auth.db'}",
            MLFLOW_AUTH_ADMIN_PASSWORD=PASSWORDS["MLFLOW_ADMIN_PASSWORD"],
            MLFLOW_FLASK_SERVER_SECRET_KEY="F" * 16 + "3f9a1c7e5b2d8046",
            AWS_SECRET_ACCESS_KEY="unused-here-3f9a1c7e5b2d8046",
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        ),
    )
    with server.running():
        for _ in range(2):  # the second run finds every user and grant in place
            users = _users_script(
                MLFLOW_TRACKING_URI=url, TELESCORE_MLFLOW_MODEL_NAME=MODEL, **PASSWORDS
            )
            assert users.returncode == 0, f"mlflow-users failed:\n{users.stderr}"
        yield url


def _users_script(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DOCKER / "mlflow-users.py")],
        env=_script_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _post(url: str, body: dict[str, str], user: str | None, headers: dict[str, str]) -> int:
    sent = {"Content-Type": "application/json"} | headers
    if user is not None:
        password = PASSWORDS[f"MLFLOW_{user.upper()}_PASSWORD"]
        login = f"telescore-{user}" if user != "admin" else "admin"
        sent["Authorization"] = "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 - the fixture's local server
        url, data=json.dumps(body).encode(), headers=sent, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.parametrize(
    ("user", "headers", "expected"),
    [
        (None, {}, 401),
        ("reader", {}, 403),
        ("writer", {"Origin": "http://attacker.example"}, 403),
        ("writer", {}, 200),
    ],
    ids=["anonymous", "reader", "writer-from-another-origin", "writer"],
)
def test_only_the_writer_changes_the_registered_model(
    mlflow_container: str, user: str | None, headers: dict[str, str], expected: int
) -> None:
    # given MLflow as the image runs it, and one caller
    tag = {"name": MODEL, "key": "touched-by", "value": str(user)}
    # when it changes the registered model the users script set up
    status = _post(f"{mlflow_container}{TAG_PATH}", tag, user, headers)
    # then only the writer, from no foreign origin, may
    assert status == expected, f"{user} {headers} was answered {status}, not {expected}"


@pytest.mark.parametrize(
    ("script", "env", "named"),
    [
        (
            "mlflow-users.py",
            PASSWORDS | {"MLFLOW_READER_PASSWORD": "changeme"},
            "MLFLOW_READER_PASSWORD holds a placeholder",
        ),
        ("mlflow-users.py", {}, "MLFLOW_ADMIN_PASSWORD holds no value"),
        (
            "mlflow-start.py",
            {"MLFLOW_AUTH_ADMIN_PASSWORD": "short-9f3a"},
            "MLFLOW_AUTH_ADMIN_PASSWORD holds a short value",
        ),
    ],
)
def test_the_scripts_refuse_a_weak_secret_before_starting(
    script: str, env: dict[str, str], named: str
) -> None:
    # given a script of the image with a secret missing, short or a placeholder
    # when it runs
    done = subprocess.run(
        [sys.executable, str(DOCKER / script)],
        env=_script_env(MLFLOW_TRACKING_URI="http://127.0.0.1:9", **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # then it exits 1 naming the secret, having started nothing
    assert done.returncode == 1, f"{script} exited {done.returncode}:\n{done.stderr}"
    assert named in done.stderr, f"{script} did not name it:\n{done.stderr}"
