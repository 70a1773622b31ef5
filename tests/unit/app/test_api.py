"""The JSON API's own logic: keys and roles, refused requests, the ranked list and its cache."""

from __future__ import annotations

import httpx
import pytest
from fastapi.routing import APIRoute
from tests.testdata.prospects import PROSPECT
from tests.unit.app.conftest import SEEDED_PROSPECTS, FastApp, fake_score

from telescore.app.errors import MLSERVER_UNREACHABLE
from telescore.core.access import API_KEY_HEADER
from telescore.core.predictions import FEATURES
from telescore.core.prospects import PROSPECT_FIELDS

PROFILE = {field: PROSPECT[field] for field in PROSPECT_FIELDS}
INDICATORS = {
    "emp_var_rate": 1.1,
    "cons_price_idx": 93.994,
    "cons_conf_idx": -36.4,
    "euribor3m": 4.857,
    "nr_employed": 5191.0,
}


def _key(key: str) -> dict[str, str]:
    return {API_KEY_HEADER: key}


def _seeded_ids() -> list[str]:
    return [f"P{number:05d}" for number in range(1, SEEDED_PROSPECTS + 1)]


def test_every_api_route_refuses_no_key_a_wrong_key_and_a_wrong_role(fast_app: FastApp) -> None:
    # given every JSON route of the app, except health and readiness
    client = fast_app.client
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
        if method == "PUT":
            # and a caller's key may not change what only ops may
            refused = client.request(method, path, headers=_key(fast_app.caller_key), json={})
            assert refused.status_code == 403, f"{method} {path} should need the ops role"


def test_the_list_is_ranked_best_first_and_filters_and_pages(fast_app: FastApp) -> None:
    # given the seeded prospects, each scored `fake_score` by the stand-in model
    client, key = fast_app.client, _key(fast_app.caller_key)
    profiles = fast_app.services.prospect_store.get_many(_seeded_ids())
    best_first = sorted(profiles, key=lambda each: (-fake_score(profiles[each]), each))
    # when a caller asks for the first two pages, then for one job's young prospects
    first = client.get("/prospects", params={"page_size": 50}, headers=key)
    second = client.get("/prospects", params={"page_size": 50, "page": 2}, headers=key)
    job = first.json()["prospects"][0]["job"]
    chosen = client.get(
        "/prospects", params={"job": job, "age_band": "30-39", "page_size": 200}, headers=key
    )
    # then every prospect is on the list, best first across pages
    assert first.status_code == 200, first.text
    assert first.json()["total"] == SEEDED_PROSPECTS, "every seeded prospect should be ranked"
    shown = [row["prospect_id"] for row in first.json()["prospects"] + second.json()["prospects"]]
    assert shown == best_first[:100], "the list should be best first, page after page"
    # and the filters hold, keeping the order
    rows = chosen.json()["prospects"]
    assert rows, f"the sample should hold {job}s in their thirties"
    assert all(row["job"] == job and 30 <= row["age"] <= 39 for row in rows), rows
    ids = [row["prospect_id"] for row in rows]
    assert ids == [each for each in best_first if each in set(ids)], "filtered, still best first"
    assert chosen.json()["total"] == len(rows), "the total counts the filtered prospects"


def test_the_list_is_scored_once_per_key_and_again_for_new_indicators(fast_app: FastApp) -> None:
    # given the list shown once
    client, key = fast_app.client, _key(fast_app.caller_key)
    before = client.get("/prospects", params={"page_size": 1}, headers=key).json()
    assert fast_app.mlserver.scored_rows == SEEDED_PROSPECTS, "the first view scores everyone"
    # when it is shown again / then nothing is rescored, the same prediction is shown
    again = client.get("/prospects", params={"page_size": 1}, headers=key).json()
    assert fast_app.mlserver.scored_rows == SEEDED_PROSPECTS, "a second view should rescore nothing"
    assert again == before, "the same list should be shown"
    # when ops put new indicators in force
    put = client.put("/indicators", json={"indicators": INDICATORS}, headers=_key(fast_app.ops_key))
    assert put.status_code == 201, put.text
    after = client.get("/prospects", params={"page_size": 1}, headers=key).json()
    # then the next view rescored everyone: new predictions, with the new indicators
    assert fast_app.mlserver.scored_rows == 2 * SEEDED_PROSPECTS, "new indicators: a new list"
    assert after["prospects"][0]["prediction_id"] != before["prospects"][0]["prediction_id"]
    read = client.get("/indicators", headers=key).json()
    assert (read["revision"], read["indicators"]) == (put.json()["revision"], INDICATORS), read


def test_a_bad_filter_or_profile_is_refused_naming_the_field(fast_app: FastApp) -> None:
    # given a filter out of range, and a profile with an unknown job
    client, key = fast_app.client, _key(fast_app.caller_key)
    # when they are sent
    bad_filter = client.get("/prospects", params={"min_score": 2}, headers=key)
    bad_profile = client.post(
        "/prospects/score-profiles",
        json={"profiles": [{**PROFILE, "job": "astronaut"}]},
        headers=key,
    )
    # then both are refused, naming the field and the value
    assert bad_filter.status_code == 422 and "min_score" in bad_filter.text, bad_filter.text
    assert bad_profile.status_code == 422, bad_profile.text
    assert "job" in bad_profile.text and "astronaut" in bad_profile.text, bad_profile.text
    assert fast_app.mlserver.scored_rows == 0, "nothing should be scored"


def test_an_unknown_prospect_is_404_naming_it(fast_app: FastApp) -> None:
    # when a known and an unknown prospect are scored by id
    response = fast_app.client.post(
        "/prospects/score",
        json={"prospect_ids": ["P00001", "NOPE"]},
        headers=_key(fast_app.caller_key),
    )
    # then the request is refused, naming the unknown one, and nothing is scored
    assert response.status_code == 404 and "NOPE" in response.text, response.text
    assert fast_app.mlserver.scored_rows == 0, "nothing should be scored"


def test_profiles_are_scored_with_the_indicators_in_force(fast_app: FastApp) -> None:
    # when a caller scores a posted profile and a prospect by id
    key = _key(fast_app.caller_key)
    profiles = fast_app.client.post(
        "/prospects/score-profiles",
        json={"profiles": [{**PROFILE, "prospect_id": "X1"}]},
        headers=key,
    )
    by_id = fast_app.client.post("/prospects/score", json={"prospect_ids": ["P00003"]}, headers=key)
    # then each answer is the model's, for the prospect it is routed by
    assert profiles.status_code == 200, profiles.text
    [stored] = fast_app.services.prospect_store.get_many(["P00003"]).values()
    assert profiles.json()[0]["score"] == pytest.approx(fake_score(PROFILE)), profiles.text
    assert by_id.json()[0]["score"] == pytest.approx(fake_score(stored)), by_id.text
    assert by_id.json()[0]["route"] == "champion", by_id.text
    # and the model was sent the profile with the indicators in force
    in_force = fast_app.client.get("/indicators", headers=key).json()["indicators"]
    logged = fast_app.mlserver.log.collection.find_one({"_id": profiles.json()[0]["prediction_id"]})
    assert logged is not None, "the prediction shown should be logged"
    features = logged[FEATURES]
    assert features["euribor3m"] == in_force["euribor3m"], features
    assert features["job"] == PROFILE["job"], features


def test_scoring_with_mlserver_unreachable_is_a_clear_503(fast_app: FastApp) -> None:
    # given MLServer unreachable
    fast_app.mlserver.failure = httpx.ConnectError("connection refused")
    # when a prospect is scored, and the list asked for
    key = _key(fast_app.caller_key)
    scored = fast_app.client.post(
        "/prospects/score", json={"prospect_ids": ["P00001"]}, headers=key
    )
    listed = fast_app.client.get("/prospects", headers=key)
    # then both answer 503, naming MLServer
    for answer in (scored, listed):
        assert answer.status_code == 503, answer.text
        assert "MLServer" in answer.json()["detail"], answer.text


def test_an_oversized_request_is_refused(fast_app: FastApp) -> None:
    # when a body over the size limit is posted / then it is refused before it is read whole
    response = fast_app.client.post(
        "/prospects/score-profiles",
        content=b"{" + b" " * (2 << 20) + b"}",
        headers={**_key(fast_app.caller_key), "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text


def test_a_canary_without_a_weight_is_refused_naming_it(fast_app: FastApp) -> None:
    # when ops ask for a canary without saying how many prospects see the challenger
    response = fast_app.client.put(
        "/routing", json={"mode": "canary"}, headers=_key(fast_app.ops_key)
    )
    # then it is refused, naming the weight, and the routing in force stays
    assert response.status_code == 422 and "canary_weight" in response.text, response.text
    routing = fast_app.client.get("/routing", headers=_key(fast_app.caller_key)).json()
    assert routing["routing"]["mode"] == "champion", routing


def test_readiness_says_which_dependency_answers(fast_app: FastApp) -> None:
    # given MongoDB and the champion answering / when readiness is asked / then it is ready
    ready = fast_app.client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "ready": True,
        "mongodb": True,
        "mlserver": True,
        "detail": None,
    }, ready.text
    # given MLServer unreachable / when asked again / then it is not, naming MLServer only
    fast_app.mlserver.failure = httpx.ConnectError("connection refused")
    down = fast_app.client.get("/ready")
    assert down.status_code == 503, down.text
    assert down.json() == {
        "ready": False,
        "mongodb": True,
        "mlserver": False,
        "detail": MLSERVER_UNREACHABLE,
    }, down.text
