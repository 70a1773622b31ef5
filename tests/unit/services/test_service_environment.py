"""The session key reaches the web app's process only, whatever the parent's environment holds."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from telescore.services import embedded
from telescore.services.mlserver import mlserver_process, reconciler_process
from telescore.services.processes import ServiceProcess

SESSION_KEY = "TELESCORE_API_SECRET_KEY"
SECRET = "s" * 48


def _repository(tmp_path: Path) -> Path:
    """A model repository whose settings.json names the ports MLServer is started on."""
    repository = tmp_path / "repository"
    repository.mkdir()
    ports = {"host": "127.0.0.1", "http_port": 1, "grpc_port": 2, "metrics_port": 3}
    (repository / "settings.json").write_text(json.dumps(ports))
    return repository


SERVICES: dict[str, Callable[[Path], ServiceProcess]] = {
    "mlserver": lambda tmp: mlserver_process(
        tmp, _repository(tmp), 1, 2, 3, "http://mlflow", control_token="t" * 32
    ),
    "mlserver-reconciler": lambda tmp: reconciler_process(
        tmp, tmp / "repository", "http://mlserver", tmp / "status.json", control_token="t" * 32
    ),
    # Its flow runs inherit its environment.
    "prefect-worker": lambda tmp: embedded.prefect_worker(
        tmp, "http://prefect/api", "pool", 4, {"TELESCORE_STATE_DIR": str(tmp)}, tmp
    ),
    "prefect": lambda tmp: embedded.prefect_server(tmp, 5),
    "mlflow": lambda tmp: embedded.mlflow_server(tmp, 6),
    "mongodb": lambda tmp: embedded.mongodb_server(tmp, 7),
    "evidently": lambda tmp: embedded.evidently_ui(tmp, 8),
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_no_service_but_the_app_inherits_the_session_key(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a `telescore` process whose environment holds the session key
    monkeypatch.setenv(SESSION_KEY, SECRET)
    # when a service it starts is given its environment
    environment = SERVICES[service](tmp_path).environment()
    # then the session key is not in it, the rest of the parent's environment is
    assert SESSION_KEY not in environment, f"{service} would start with the session key"
    assert environment.get("PATH"), f"{service} lost the parent's environment"


def test_the_web_app_inherits_the_session_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the session key in the parent's environment
    monkeypatch.setenv(SESSION_KEY, SECRET)
    # when the web app's process is given its environment / then it holds the key
    environment = embedded.outcomes_api(tmp_path, 9).environment()
    assert environment.get(SESSION_KEY) == SECRET, "the web app would start without its key"


@pytest.mark.parametrize("app_secrets", [False, True])
def test_a_started_process_sees_the_session_key_only_if_it_is_the_app(
    app_secrets: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the session key in the parent's environment
    monkeypatch.setenv(SESSION_KEY, SECRET)
    # when a process is started that prints what it finds
    log = tmp_path / "printed.log"
    process = ServiceProcess(
        name="printer",
        command=[sys.executable, "-c", f"import os; print(os.environ.get({SESSION_KEY!r}))"],
        health=lambda: True,
        log_path=log,
        app_secrets=app_secrets,
    ).launch()
    assert process.process is not None and process.process.wait(timeout=30) == 0, log.read_text()
    # then it found the key only as the web app
    printed = log.read_text().strip()
    assert printed == (SECRET if app_secrets else "None"), f"app_secrets={app_secrets}: {printed}"
