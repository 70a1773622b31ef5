"""Attacks on the registry: who may move `champion` on the embedded MLflow (basic auth).

Moving `champion` chooses the pickled model MLServer and the app's explanations load, so it
is code execution in both: only the writer (the training and promotion flows) may do it.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from mlflow.tracking import MlflowClient

if TYPE_CHECKING:
    from tests.conftest import MlflowUsers
    from tests.integration.serving_fixtures import RegisteredVersions

    from telescore.services.mlflow_auth import MlflowUser

pytestmark = pytest.mark.integration

ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"


def _post(
    url: str,
    body: dict[str, str],
    user: MlflowUser | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    """POST `body` as JSON (signed in as `user` if given); return the HTTP status."""
    sent = {"Content-Type": "application/json"} | (headers or {})
    if user is not None:
        token = base64.b64encode(f"{user.username}:{user.password}".encode()).decode()
        sent["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(  # noqa: S310 - the fixture's local server
        url, data=json.dumps(body).encode(), headers=sent, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _champion(tracking_uri: str, name: str) -> str:
    """The version `champion` points at, read with the session's (writer's) credentials."""
    return str(MlflowClient(tracking_uri).get_model_version_by_alias(name, "champion").version)


@pytest.fixture
def champion_restored(
    mlflow_tracking_uri: str, registered_versions: RegisteredVersions
) -> Iterator[None]:
    """Point `champion` back at the session's champion after the test: others rely on it."""
    yield
    client = MlflowClient(mlflow_tracking_uri)
    client.set_registered_model_alias(
        registered_versions.name, "champion", registered_versions.champion
    )


def test_an_anonymous_request_cannot_move_champion(
    mlflow_tracking_uri: str, registered_versions: RegisteredVersions
) -> None:
    # given the registry with `champion` on one version, and a request without credentials
    move = {
        "name": registered_versions.name,
        "alias": "champion",
        "version": registered_versions.challenger,
    }

    # when it points `champion` at the challenger
    status = _post(f"{mlflow_tracking_uri}{ALIAS_PATH}", move)

    # then it is refused as unauthenticated, and `champion` has not moved
    assert status == 401, f"an anonymous alias move was answered {status}, not refused (401)"
    assert _champion(mlflow_tracking_uri, registered_versions.name) == (
        registered_versions.champion
    ), "champion moved on an anonymous request"


def test_the_readers_credentials_cannot_move_champion(
    mlflow_tracking_uri: str, registered_versions: RegisteredVersions, mlflow_users: MlflowUsers
) -> None:
    # given the reader's credentials: what MLServer, its reconciler and the app hold
    move = {
        "name": registered_versions.name,
        "alias": "champion",
        "version": registered_versions.challenger,
    }

    # when they point `champion` at the challenger
    status = _post(f"{mlflow_tracking_uri}{ALIAS_PATH}", move, mlflow_users.reader)

    # then the move is forbidden, and `champion` has not moved
    assert status == 403, f"the reader's alias move was answered {status}, not forbidden (403)"
    assert _champion(mlflow_tracking_uri, registered_versions.name) == (
        registered_versions.champion
    ), "champion moved on the reader's request"


@pytest.mark.usefixtures("champion_restored")
def test_the_writers_credentials_move_champion(
    mlflow_tracking_uri: str, registered_versions: RegisteredVersions, mlflow_users: MlflowUsers
) -> None:
    # given the writer's credentials: what the training and promotion flows hold
    move = {
        "name": registered_versions.name,
        "alias": "champion",
        "version": registered_versions.challenger,
    }

    # when they point `champion` at the challenger
    status = _post(f"{mlflow_tracking_uri}{ALIAS_PATH}", move, mlflow_users.writer)

    # then the move is accepted and `champion` points at the challenger
    assert status == 200, f"the writer's alias move was answered {status}, not accepted"
    assert _champion(mlflow_tracking_uri, registered_versions.name) == (
        registered_versions.challenger
    ), "champion did not move on the writer's request"


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_a_cross_site_post_with_the_writers_credentials_cannot_move_champion(
    mlflow_tracking_uri: str,
    registered_versions: RegisteredVersions,
    mlflow_users: MlflowUsers,
    content_type: str,
) -> None:
    # given a page on another site posting to the registry from the operator's browser, which
    # holds the writer's basic credentials and sends them along: a simple POST (text/plain, no
    # preflight), or a JSON one whose preflight the page ignores
    move = {
        "name": registered_versions.name,
        "alias": "champion",
        "version": registered_versions.challenger,
    }
    cross_site = {"Origin": "http://attacker.example", "Content-Type": content_type}

    # when it points `champion` at the challenger
    status = _post(
        f"{mlflow_tracking_uri}{ALIAS_PATH}", move, mlflow_users.writer, headers=cross_site
    )

    # then MLflow's origin check refuses it, and `champion` has not moved
    assert status == 403, f"a cross-site alias move was answered {status}, not refused (403)"
    assert _champion(mlflow_tracking_uri, registered_versions.name) == (
        registered_versions.champion
    ), "champion moved on a cross-site request"


def test_an_anonymous_request_cannot_create_an_experiment(mlflow_tracking_uri: str) -> None:
    # given a request without credentials
    # when it creates an experiment
    status = _post(
        f"{mlflow_tracking_uri}/api/2.0/mlflow/experiments/create", {"name": "anonymous-writes"}
    )

    # then it is refused as unauthenticated
    assert status == 401, f"an anonymous experiment was answered {status}, not refused (401)"


def _delete_challenger(tracking_uri: str, name: str, user: MlflowUser) -> int:
    """DELETE the `challenger` alias signed in as `user`, as a promotion does; the status."""
    token = base64.b64encode(f"{user.username}:{user.password}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 - the fixture's local server
        f"{tracking_uri}{ALIAS_PATH}",
        data=json.dumps({"name": name, "alias": "challenger"}).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        method="DELETE",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_only_the_writer_deletes_challenger_as_a_promotion_does(
    mlflow_tracking_uri: str, registered_versions: RegisteredVersions, mlflow_users: MlflowUsers
) -> None:
    # given `challenger` on a version: a promotion or a rollback deletes it (jobs.releases)
    name, challenger = registered_versions.name, registered_versions.challenger
    client = MlflowClient(mlflow_tracking_uri)
    try:
        # when the reader, then the writer, delete it
        by_reader = _delete_challenger(mlflow_tracking_uri, name, mlflow_users.reader)
        by_writer = _delete_challenger(mlflow_tracking_uri, name, mlflow_users.writer)
        aliases = client.get_registered_model(name).aliases
    finally:
        client.set_registered_model_alias(name, "challenger", challenger)
    # then the reader is forbidden, and the writer's promotion may finish
    assert by_reader == 403, f"the reader's delete was answered {by_reader}, not 403"
    assert by_writer == 200, f"the writer's delete was answered {by_writer}: promotions fail"
    assert "challenger" not in aliases, f"challenger survived the writer's delete: {aliases}"


def test_the_reader_can_read_champion(
    mlflow_tracking_uri: str, registered_versions: RegisteredVersions, mlflow_users: MlflowUsers
) -> None:
    # given the reader's credentials
    token = base64.b64encode(
        f"{mlflow_users.reader.username}:{mlflow_users.reader.password}".encode()
    ).decode()
    query = f"name={registered_versions.name}&alias=champion"
    request = urllib.request.Request(  # noqa: S310 - the fixture's local server
        f"{mlflow_tracking_uri}/api/2.0/mlflow/registered-models/alias?{query}",
        headers={"Authorization": f"Basic {token}"},
    )

    # when they read `champion`
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        answer = json.loads(response.read())

    # then the registry answers with the champion's version
    assert answer["model_version"]["version"] == registered_versions.champion, (
        f"the reader read {answer} for champion"
    )
