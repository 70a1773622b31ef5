"""Who sends the Prefect API's auth string, and what the embedded server and worker are given."""

from __future__ import annotations

from pathlib import Path

import pytest

from telescore.io.context import Context
from telescore.io.orchestrator import AUTH_FILE
from telescore.services.embedded import prefect_server, prefect_worker
from telescore.settings import PrefectSettings, ProjectSettings, Settings


def _context(state: Path, prefect: PrefectSettings, environment: str = "development") -> Context:
    project = ProjectSettings(state_dir=state, environment=environment)
    return Context(Settings.model_construct(project=project, prefect=prefect))


def test_the_embedded_server_gets_a_generated_auth_string(tmp_path: Path) -> None:
    # given development settings with the embedded Prefect server
    api = _context(tmp_path, PrefectSettings(api_url=None, auth_string=None)).prefect_api
    # then clients send the auth string kept under the state folder
    assert api.auth_string == (tmp_path / AUTH_FILE).read_text().strip(), "not the kept one"
    assert api.client_env()["PREFECT_API_AUTH_STRING"] == api.auth_string, "not exported"
    assert api.auth_string not in repr(api), "the auth string must not show in logs"


def test_a_configured_auth_string_wins_and_a_configured_server_without_one_gets_none(
    tmp_path: Path,
) -> None:
    # given a configured server, with and without credentials
    given = PrefectSettings(api_url="http://prefect:4200/api", auth_string="ops:" + "x" * 40)
    bare = PrefectSettings(api_url="http://prefect:4200/api", auth_string=None)
    # then the configured one is sent, and none is invented for a server telescore did not start
    assert _context(tmp_path, given).prefect_api.auth_string == "ops:" + "x" * 40
    assert _context(tmp_path, bare).prefect_api.auth_string is None
    assert not (tmp_path / AUTH_FILE).exists(), "an auth string was generated for nothing"


def test_production_refuses_to_call_prefect_without_credentials(tmp_path: Path) -> None:
    # given production settings without an auth string, when a client is made, then refused
    context = _context(tmp_path, PrefectSettings(api_url="http://prefect:4200/api"), "production")
    with pytest.raises(ValueError, match="TELESCORE_PREFECT_AUTH_STRING"):
        _ = context.prefect_api


def test_the_embedded_server_and_worker_are_given_the_auth_string(tmp_path: Path) -> None:
    # given the processes `telescore up` starts
    server = prefect_server(tmp_path, 4200, auth_string="telescore:secret-1")
    worker = prefect_worker(
        tmp_path,
        "http://127.0.0.1:4200/api",
        "pool",
        4201,
        {},
        tmp_path,
        auth_string="telescore:secret-1",
    )
    # then the server asks for it and answers CORS for its own UI only, and the worker sends it
    assert server.env["PREFECT_SERVER_API_AUTH_STRING"] == "telescore:secret-1", server.env
    assert server.env["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:4200"
    assert worker.env["PREFECT_API_AUTH_STRING"] == "telescore:secret-1", "flow runs inherit it"
