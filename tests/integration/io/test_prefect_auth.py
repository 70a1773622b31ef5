"""The embedded Prefect server asks every API call for its auth string; CORS: its own UI only.

Every write also needs a CSRF token (Prefect's `CsrfMiddleware`), which only a holder of the
auth string can fetch (`GET /api/csrf-token`); Prefect's clients fetch it themselves. The
middleware runs before the auth check, so a write without a token is refused 403 whatever its
credentials. Against a real Prefect server started as `telescore up` starts it
(`embedded.prefect_server`), and a real process worker.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from telescore.io import orchestrator
from telescore.services.embedded import prefect_server, prefect_worker
from telescore.services.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FOREIGN_ORIGIN = "https://attacker.example"
JOB_TEMPLATE = Path(__file__).resolve().parents[3] / "k8s" / "prefect" / "base-job-template.json"
"""The Kubernetes work pool's base job template, as CD gives it to the pool."""


@dataclass(frozen=True)
class Server:
    origin: str
    api_url: str
    auth_string: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An embedded Prefect server on a free port, with a generated auth string."""
    state = tmp_path_factory.mktemp("prefect-auth")
    auth_string = orchestrator.embedded_auth_string(state)
    port = free_port()
    exported = {
        name: os.environ.get(name) for name in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING")
    }
    try:
        with prefect_server(state, port, auth_string=auth_string).running():
            origin = f"http://127.0.0.1:{port}"
            yield Server(origin, f"{origin}/api", auth_string)
    finally:
        # The orchestrator exports the API for processes it starts: put the environment back.
        for name, value in exported.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _prefect_client(server: Server, auth_string: str | None = None) -> Iterator[SyncPrefectClient]:
    """Prefect's own client on the server, sending `auth_string` (default: the right one).

    Prefect's client retries a busy server's 503 (SQLite locked on a loaded machine), as every
    client of the platform does; raw requests below are only the refused ones.
    """
    updates = {
        PREFECT_API_URL: server.api_url,
        PREFECT_API_AUTH_STRING: auth_string or server.auth_string,
    }
    with temporary_settings(updates=updates), get_client(sync_client=True) as client:
        yield client


def _flow_id(server: Server) -> UUID:
    with _prefect_client(server) as client:
        return client.create_flow_from_name(f"auth-{secrets.token_hex(4)}")


def _deployment_id(
    server: Server, pool: str | None = None, job_variables: dict[str, object] | None = None
) -> UUID:
    with _prefect_client(server) as client:
        return client.create_deployment(
            _flow_id(server),
            f"auth-{secrets.token_hex(4)}",
            work_pool_name=pool,
            entrypoint="pipelines/training.py:train_telemarketing",
            job_variables=job_variables,
        )


def test_the_generated_auth_string_is_kept_owner_only(tmp_path: Path) -> None:
    # given a fresh state folder, when the embedded auth string is asked for twice
    first = orchestrator.embedded_auth_string(tmp_path)
    second = orchestrator.embedded_auth_string(tmp_path)
    # then it is generated once, long, and readable by its owner only
    assert first == second, "the auth string must survive a restart, as the app's secret does"
    user, _, password = first.partition(":")
    assert user and len(password) >= 32, "a `user:password` with a long random password"
    mode = (tmp_path / orchestrator.AUTH_FILE).stat().st_mode & 0o777
    assert mode == 0o600, f"the auth file is readable by others: {oct(mode)}"


def _credentials(server: Server) -> tuple[str, str]:
    user, _, password = server.auth_string.partition(":")
    return user, password


def _csrf_headers(server: Server, auth: tuple[str, str] | None) -> tuple[int, dict[str, str]]:
    """Ask the server for a CSRF token as a new client; return the status and its headers."""
    client = secrets.token_hex(8)
    answer = httpx.get(
        f"{server.api_url}/csrf-token", params={"client": client}, auth=auth, timeout=30
    )
    if answer.status_code != 200:
        return answer.status_code, {}
    return 200, {"Prefect-Csrf-Token": answer.json()["token"], "Prefect-Csrf-Client": client}


def test_an_unauthenticated_flow_run_creation_is_refused(server: Server) -> None:
    # given a flow on the server, and a CSRF token fetched with the credentials (so that only
    # the auth string is missing below)
    flow_id = str(_flow_id(server))
    _, csrf = _csrf_headers(server, _credentials(server))
    # when a flow run is created without credentials, or with wrong ones
    anonymous = httpx.post(
        f"{server.api_url}/flow_runs/", json={"flow_id": flow_id}, headers=csrf, timeout=30
    )
    wrong = httpx.post(
        f"{server.api_url}/flow_runs/",
        json={"flow_id": flow_id},
        headers=csrf,
        auth=("telescore", "not-the-password"),
        timeout=30,
    )
    # then both are refused
    assert anonymous.status_code == 401, f"anonymous flow run creation: {anonymous.status_code}"
    assert wrong.status_code == 401, f"flow run creation with a wrong password: {wrong.status_code}"
    # and without the credentials no CSRF token is given either
    anonymous_csrf, _ = _csrf_headers(server, None)
    assert anonymous_csrf == 401, f"a CSRF token was given to anyone: {anonymous_csrf}"
    # and Prefect's client with the credentials creates one
    deployment_id = _deployment_id(server)
    with _prefect_client(server) as client:
        flow_run = client.create_flow_run_from_deployment(deployment_id)
    assert flow_run.deployment_id == deployment_id, "the authenticated client could not create it"


def test_a_cross_site_simple_post_is_refused(server: Server) -> None:
    # given a page on another site, whose browser sends a "simple" POST (no preflight)
    flow_id = str(_flow_id(server))
    response = httpx.post(
        f"{server.api_url}/flow_runs/",
        content=f'{{"flow_id": "{flow_id}"}}',
        headers={"Origin": FOREIGN_ORIGIN, "Content-Type": "text/plain"},
        timeout=30,
    )
    # then it is refused (it cannot carry a CSRF token), and the page may not read the answer
    assert response.status_code == 403, f"cross-site simple POST answered {response.status_code}"
    allowed = response.headers.get("access-control-allow-origin")
    assert allowed not in ("*", FOREIGN_ORIGIN), f"CORS lets the foreign page read: {allowed}"


def test_a_write_without_the_csrf_token_is_refused_even_with_the_auth_string(
    server: Server,
) -> None:
    # given a flow on the server, and the auth string
    flow_id = str(_flow_id(server))
    credentials = _credentials(server)

    def create_run(headers: dict[str, str]) -> httpx.Response:
        return httpx.post(
            f"{server.api_url}/flow_runs/",
            json={"flow_id": flow_id},
            headers=headers,
            auth=credentials,
            timeout=30,
        )

    # when a flow run is created with the auth string but no CSRF token, or a made-up one
    missing = create_run({})
    made_up = create_run({"Prefect-Csrf-Token": "x" * 32, "Prefect-Csrf-Client": "attacker"})
    # then both are refused
    assert missing.status_code == 403, f"no CSRF token: {missing.status_code} {missing.text}"
    assert made_up.status_code == 403, f"a made-up CSRF token: {made_up.status_code}"
    # and with a token fetched with the auth string, the same call is accepted
    status, csrf = _csrf_headers(server, credentials)
    assert status == 200, f"the auth string's holder gets no CSRF token: {status}"
    accepted = create_run(csrf)
    assert accepted.status_code == 201, f"with the token: {accepted.status_code} {accepted.text}"


def test_cors_allows_only_the_servers_own_ui(server: Server) -> None:
    # given a preflight from a foreign page and one from the server's own UI
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{server.api_url}/flow_runs/",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
            timeout=30,
        )

    foreign, own = preflight(FOREIGN_ORIGIN), preflight(server.origin)
    # then only the UI's origin is allowed
    assert foreign.headers.get("access-control-allow-origin") is None, (
        f"a foreign origin passes the preflight: {foreign.headers}"
    )
    assert own.headers.get("access-control-allow-origin") == server.origin, (
        f"the server's own UI is refused: {own.status_code} {own.headers}"
    )


def test_the_orchestrator_client_sends_the_auth_string(server: Server) -> None:
    # given a flow run created with the credentials
    deployment_id = _deployment_id(server)
    with _prefect_client(server) as client:
        flow_run_id = str(client.create_flow_run_from_deployment(deployment_id).id)
    # when the orchestrator reads it with the API's credentials, then it is found
    api = orchestrator.PrefectApi(server.api_url, server.auth_string)
    state = orchestrator.flow_run_state(flow_run_id, api)
    assert state["state"] != "unknown" and not state["final"], f"unexpected state {state}"
    # and with a wrong password it is refused
    with pytest.raises(Exception, match="401"):
        orchestrator.flow_run_state(
            flow_run_id, orchestrator.PrefectApi(server.api_url, "telescore:wrong")
        )


@pytest.mark.parametrize(
    "job_variables",
    [
        {"command": "sh -c 'id > /tmp/owned'"},
        {"env": {"TELESCORE_PROJECT_ROOT": "/tmp/attacker"}},
        {"working_dir": "/tmp/attacker"},
    ],
)
def test_a_run_cannot_change_what_the_process_worker_runs(
    server: Server, tmp_path: Path, job_variables: dict[str, object]
) -> None:
    # given the process pool as `telescore up` creates it, and a deployment on it
    api = orchestrator.PrefectApi(server.api_url, server.auth_string)
    orchestrator.ensure_work_pool("locked-pool", api.client_env(), tmp_path)
    deployment_id = _deployment_id(server, "locked-pool")
    with _prefect_client(server) as client:
        variables = client.read_work_pool("locked-pool").base_job_template["variables"]
        # when a run asks for another command, environment or folder
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(deployment_id, job_variables=job_variables)
        # and when it sets a variable it may set
        allowed = client.create_flow_run_from_deployment(
            deployment_id, job_variables={"stream_output": False}
        )
    # then the first is refused, the second created
    assert refused.value.response.status_code == 422, f"{job_variables}: {refused.value}"
    assert allowed.deployment_id == deployment_id, "a run with an allowed variable is refused"
    locked = {"command", "env", "working_dir"} & set(variables["properties"])
    assert not locked, f"the pool's template still offers {locked}"


def _kubernetes_pool(server: Server, name: str, image: str) -> None:
    """Create the Kubernetes pool from k8s/prefect/base-job-template.json, as CD does (jq)."""
    template = json.loads(JOB_TEMPLATE.read_text())
    template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0][
        "image"
    ] = image
    with _prefect_client(server) as client:
        client.create_work_pool(
            WorkPoolCreate(name=name, type="kubernetes", base_job_template=template),
            overwrite=True,
        )


@pytest.mark.parametrize(
    "job_variables",
    [
        {"image": "attacker.example/owned:latest"},
        {"command": "sh -c 'id > /tmp/owned'"},
        {"env": {"PYTHONPATH": "/tmp/attacker"}},
    ],
)
def test_a_run_cannot_change_the_image_or_the_command_of_a_kubernetes_pod(
    server: Server, job_variables: dict[str, object]
) -> None:
    # given the Kubernetes pool as CD creates it, with the commit's image, and a deployment
    pool = f"kubernetes-{secrets.token_hex(4)}"
    _kubernetes_pool(server, pool, "ghcr.io/example/telescore:0123abc")
    deployment_id = _deployment_id(server, pool)
    with _prefect_client(server) as client:
        # when a run asks for another image, command or environment
        with pytest.raises(PrefectHTTPStatusError) as refused_run:
            client.create_flow_run_from_deployment(deployment_id, job_variables=job_variables)
        # and when a run sets a variable it may set
        allowed = client.create_flow_run_from_deployment(
            deployment_id, job_variables={"memory_limit": "3Gi"}
        )
    # and when a deployment asks for them
    with pytest.raises(PrefectHTTPStatusError) as refused_deployment:
        _deployment_id(server, pool, job_variables)
    # then the run and the deployment are refused, the allowed run created
    assert refused_run.value.response.status_code == 422, f"run {job_variables}: {refused_run}"
    assert refused_deployment.value.response.status_code == 422, (
        f"deployment {job_variables}: {refused_deployment.value}"
    )
    assert allowed.deployment_id == deployment_id, "a run with an allowed variable is refused"


HELLO_FLOW = """
from prefect import flow


@flow(persist_result=True)
def hello() -> int:
    return 42
"""


def test_a_deployment_runs_through_the_worker_with_csrf_protection_on(
    server: Server, tmp_path: Path
) -> None:
    # given the process pool and a worker as `telescore up` makes them, and a deployment
    # registered by Prefect's CLI: each a Prefect client that must fetch CSRF tokens
    api = orchestrator.PrefectApi(server.api_url, server.auth_string)
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello.py").write_text(HELLO_FLOW)
    (project / "prefect.yaml").write_text(
        "name: csrf-test\n"
        "pull:\n"
        "  - prefect.deployments.steps.set_working_directory:\n"
        f"      directory: {project}\n"
        "deployments:\n"
        "  - name: default\n"
        "    entrypoint: hello.py:hello\n"
        "    work_pool:\n"
        "      name: csrf-pool\n"
    )
    orchestrator.ensure_work_pool("csrf-pool", api.client_env(), project)
    orchestrator.deploy_all(project / "prefect.yaml", api.client_env(), project)
    worker = prefect_worker(
        tmp_path / "worker",
        server.api_url,
        "csrf-pool",
        free_port(),
        {},
        project,
        auth_string=server.auth_string,
    )
    with worker.running():
        # when the deployment is run and waited for
        outcome = orchestrator.run_deployment("hello/default", api, timeout=300)
    # then the worker ran it to completion: the worker, the flow run and the CLI all wrote
    assert outcome["completed"], f"the run did not complete: {outcome}"
    assert outcome["result"] == 42, f"the run's result was not stored: {outcome}"
