"""Attacks on the embedded Evidently UI: nobody can create or delete a project through it.

The monitor writes the workspace's files itself; the UI only shows them. It is started with a
write secret (Evidently's `EVIDENTLY_SECRET`) that nobody is given, so its write API refuses
everyone, a browser page's cross-site "simple" POST included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from telescore.services.embedded import evidently_ui
from telescore.services.processes import free_port
from telescore.validation.evidently_dashboards import PROJECT_ID, MonitoringWorkspace

pytestmark = pytest.mark.integration

FOREIGN_ORIGIN = "https://attacker.example"


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The embedded Evidently UI on a workspace holding the monitor's project."""
    state = tmp_path_factory.mktemp("evidently-ui")
    MonitoringWorkspace(state / "evidently").write_dashboard()
    port = free_port()
    with (
        evidently_ui(state, port).running(),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client,
    ):
        yield client


def _projects(ui: httpx.Client) -> dict[str, str]:
    listed = ui.get("/api/projects")
    assert listed.status_code == 200, f"the UI must still list projects: {listed.text}"
    return {project["id"]: project["name"] for project in listed.json()}


def test_a_cross_site_simple_post_cannot_create_a_project(ui: httpx.Client) -> None:
    # given the projects the UI shows, and a page on another site posting a project as
    # text/plain (a "simple" request: no preflight, so no custom header)
    before = _projects(ui)
    body = json.dumps({"name": "planted", "description": "by a web page"})

    # when the page's POST reaches the UI
    answer = ui.post(
        "/api/projects",
        content=body,
        headers={"Origin": FOREIGN_ORIGIN, "Content-Type": "text/plain"},
    )

    # then it is refused, and no project was added
    assert answer.status_code in {401, 403}, f"a cross-site project POST answered {answer}"
    assert _projects(ui) == before, "a cross-site POST must not add a project"


def test_a_caller_without_the_secret_cannot_create_or_delete_a_project(ui: httpx.Client) -> None:
    # given a local caller without the UI's write secret
    before = _projects(ui)
    assert str(PROJECT_ID) in before, f"the monitor's project should be listed: {before}"

    # when it posts a project as JSON, then deletes the monitor's project
    created = ui.post("/api/projects", json={"name": "planted", "description": "by a caller"})
    deleted = ui.delete(f"/api/projects/{PROJECT_ID}")

    # then both are refused, and the UI shows what it showed
    assert created.status_code in {401, 403}, f"creating a project answered {created}"
    assert deleted.status_code in {401, 403}, f"deleting a project answered {deleted}"
    assert _projects(ui) == before, "the projects must be unchanged"


def test_the_ui_is_given_a_write_secret_in_its_environment_not_its_arguments(
    tmp_path: Path,
) -> None:
    # given the embedded UI's process, as `telescore up` starts it
    process = evidently_ui(tmp_path, free_port())

    # then it has a long random write secret, kept out of the command line (`ps` shows that)
    secret = process.env.get("EVIDENTLY_SECRET", "")
    assert len(secret) >= 32, "the UI must be started with a write secret"
    assert secret not in " ".join(process.command), "the secret must not be in the arguments"
