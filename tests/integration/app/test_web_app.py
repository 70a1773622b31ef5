"""The web app's JSON API on real services: outcomes of calls, canary, shadow, MLServer down.

The routes' own logic (keys, refused requests, the list's order) is in tests/integration/app_fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.integration.app.conftest import Keys, app_settings
from tests.integration.serving_fixtures import ServedMLServer

from telescore.app.main import create_app
from telescore.io.prediction_store import PredictionStore
from telescore.settings import ServingSettings

pytestmark = pytest.mark.integration


def _key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    """Poll until `condition()` is truthy (the prediction log ships asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _logged(mlserver: ServedMLServer, query: dict[str, Any]) -> list[dict[str, Any]]:
    with PredictionStore(mlserver.mongodb_uri, mlserver.database) as store:
        return list(store.collection.find(query))


def test_a_subscribed_call_records_the_outcome_of_the_prediction_shown(
    client: TestClient, keys: Keys, mlserver: ServedMLServer
) -> None:
    # given a prospect scored by id (a logged prediction)
    scored = client.post(
        "/prospects/score", json={"prospect_ids": ["P00007"]}, headers=_key(keys.caller)
    ).json()[0]
    # when the caller records that the prospect subscribed
    call = client.post(
        "/prospects/P00007/calls",
        json={"prediction_id": scored["prediction_id"], "result": "subscribed"},
        headers=_key(keys.caller),
    )
    # then the outcome joins that prediction, now or once it has shipped
    assert call.status_code == 201, call.text
    assert call.json()["outcome_status"] in ("recorded", "pending"), call.text

    def outcome() -> dict[str, Any] | None:
        client.get("/prospects", params={"page_size": 1}, headers=_key(keys.caller))
        found = client.get(f"/outcomes/{scored['prediction_id']}", headers=_key(keys.caller))
        return found.json() if found.status_code == 200 else None

    recorded = _wait_for(outcome, "the outcome to be recorded")
    assert recorded["subscribed"] is True, recorded
    listed = client.get(
        "/prospects", params={"not_called": True, "page_size": 200}, headers=_key(keys.caller)
    )
    assert "P00007" not in {row["prospect_id"] for row in listed.json()["prospects"]}, (
        "a called prospect should leave the not-yet-called list"
    )


def test_a_canary_splits_by_prospect_and_sticks(client: TestClient, keys: Keys) -> None:
    # given half of the prospects routed to the challenger
    routed = client.put(
        "/routing", json={"mode": "canary", "canary_weight": 50}, headers=_key(keys.ops)
    )
    assert routed.status_code == 201, routed.text
    ids = [f"P{n:05d}" for n in range(1, 201)]
    # when the same prospects are scored twice
    first = client.post("/prospects/score", json={"prospect_ids": ids}, headers=_key(keys.caller))
    second = client.post("/prospects/score", json={"prospect_ids": ids}, headers=_key(keys.caller))
    # then both models answer, each prospect always from the same one
    routes = [row["route"] for row in first.json()]
    assert {"champion", "challenger"} == set(routes), routes
    assert routes == [row["route"] for row in second.json()], "a prospect should not flip models"
    assert 60 <= routes.count("challenger") <= 140, "about half should see the challenger"


def test_shadow_logs_the_challenger_and_shows_the_champion(
    client: TestClient, keys: Keys, mlserver: ServedMLServer
) -> None:
    client.put("/routing", json={"mode": "shadow"}, headers=_key(keys.ops))
    response = client.post(
        "/prospects/score", json={"prospect_ids": ["P00011", "P00012"]}, headers=_key(keys.caller)
    )
    shown = response.json()
    assert [row["route"] for row in shown] == ["champion", "champion"], shown
    champion = _wait_for(
        lambda: _logged(mlserver, {"_id": shown[0]["prediction_id"]}), "the shown prediction"
    )[0]
    shadows = _wait_for(
        lambda: _logged(mlserver, {"request_id": champion["request_id"], "route": "shadow"}),
        "the shadow's predictions",
    )
    assert len(shadows) == 2, "the challenger should score every row of the request in the shadow"
    assert {each["model_version"] for each in shadows} != {champion["model_version"]}, (
        "the shadow's answers should come from the challenger"
    )


def test_mlserver_unreachable_is_a_clear_503(
    mlserver: ServedMLServer, mlflow_tracking_uri: str, tmp_path: Any, keys: Keys, seeded: int
) -> None:
    settings = app_settings(mlserver, mlflow_tracking_uri, tmp_path).model_copy(
        update={"serving": ServingSettings(url="http://127.0.0.1:9")}
    )
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/prospects/score", json={"prospect_ids": ["P00001"]}, headers=_key(keys.caller)
        )
        ready = client.get("/ready")
    assert response.status_code == 503, response.text
    assert "MLServer" in response.json()["detail"], response.text
    assert ready.status_code == 503 and ready.json()["mlserver"] is False, ready.text
