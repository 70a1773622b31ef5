"""The web app's JSON API on real services: ranking, scoring, calls, routing, auth, faults."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from tests.integration.app.conftest import Keys, app_settings
from tests.integration.serving_fixtures import ServedMLServer
from tests.testdata.prospects import PROSPECT

from telescore.app.main import create_app
from telescore.core.prospects import PROSPECT_FIELDS
from telescore.io.prediction_store import PredictionStore
from telescore.settings import ServingSettings

pytestmark = pytest.mark.integration

PROFILE = {field: PROSPECT[field] for field in PROSPECT_FIELDS}


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


def test_every_api_route_refuses_no_key_a_wrong_key_and_a_wrong_role(
    client: TestClient, keys: Keys
) -> None:
    # given every JSON route of the app, except health and readiness
    routes = [
        route
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, APIRoute) and route.include_in_schema and "health" not in route.tags
    ]
    assert len(routes) >= 9, "the API's routes should all be checked"
    for route in routes:
        method = sorted(route.methods)[0]
        path = route.path.replace("{prospect_id}", "P00001").replace(
            "{prediction_id}", "0190a5e5-6b1e-7000-8000-000000000000"
        )
        # when called without a key, then with a key nobody issued
        missing = client.request(method, path)
        wrong = client.request(method, path, headers=_key("tsk_0123456789ab_" + "x" * 32))
        # then both are refused as unauthenticated, whatever the body
        assert missing.status_code == 401, f"{method} {path} without a key: {missing.text}"
        assert wrong.status_code == 401, f"{method} {path} with a wrong key: {wrong.text}"
        ops_only = method in ("PUT",)
        if ops_only:
            refused = client.request(method, path, headers=_key(keys.caller), json={})
            assert refused.status_code == 403, f"{method} {path} should need the ops role"


def test_the_list_is_ranked_best_first_and_filters_and_pages(
    client: TestClient, keys: Keys, seeded: int
) -> None:
    # when a caller asks for the whole list, then for one job's prospects not yet called
    first = client.get("/prospects", params={"page_size": 50}, headers=_key(keys.caller))
    second = client.get(
        "/prospects", params={"page_size": 50, "page": 2}, headers=_key(keys.caller)
    )
    students = client.get(
        "/prospects", params={"job": "student", "age_band": "17-29"}, headers=_key(keys.caller)
    )
    # then every prospect is on the list, best first across pages, and the filters hold
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["total"] == seeded, "every seeded prospect should be ranked"
    scores = [row["score"] for row in body["prospects"] + second.json()["prospects"]]
    assert scores == sorted(scores, reverse=True), "the list should be best first, page after page"
    rows = students.json()["prospects"]
    assert rows, "the sample should hold young students"
    assert all(row["job"] == "student" and 17 <= row["age"] <= 29 for row in rows), rows


def test_a_bad_filter_or_profile_is_refused_naming_the_field(
    client: TestClient, keys: Keys
) -> None:
    bad_filter = client.get("/prospects", params={"min_score": 2}, headers=_key(keys.caller))
    bad_profile = client.post(
        "/prospects/score-profiles",
        json={"profiles": [{**PROFILE, "job": "astronaut"}]},
        headers=_key(keys.caller),
    )
    assert bad_filter.status_code == 422 and "min_score" in bad_filter.text, bad_filter.text
    assert bad_profile.status_code == 422, bad_profile.text
    assert "job" in bad_profile.text and "astronaut" in bad_profile.text, bad_profile.text


def test_an_unknown_prospect_is_404_naming_it(client: TestClient, keys: Keys) -> None:
    response = client.post(
        "/prospects/score", json={"prospect_ids": ["P00001", "NOPE"]}, headers=_key(keys.caller)
    )
    assert response.status_code == 404 and "NOPE" in response.text, response.text


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


def test_an_oversized_request_is_refused(client: TestClient, keys: Keys) -> None:
    response = client.post(
        "/prospects/score-profiles",
        content=b"{" + b" " * (2 << 20) + b"}",
        headers={**_key(keys.caller), "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text


def test_a_canary_without_a_weight_is_refused_naming_it(client: TestClient, keys: Keys) -> None:
    response = client.put("/routing", json={"mode": "canary"}, headers=_key(keys.ops))
    assert response.status_code == 422 and "canary_weight" in response.text, response.text
