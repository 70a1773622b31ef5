"""Outcomes decide promotions: reporting them through the API needs a key meant for it."""

from __future__ import annotations

from tests.unit.app.conftest import FastApp

from telescore.core.access import API_KEY_HEADER, allows
from telescore.jobs.access import create_api_key


def _shown_prediction(fast_app: FastApp) -> str:
    listed = fast_app.client.get("/prospects", headers={API_KEY_HEADER: fast_app.caller_key})
    assert listed.status_code == 200, listed.text
    prediction: str = listed.json()["prospects"][0]["prediction_id"]
    return prediction


def test_a_caller_key_cannot_report_outcomes_through_the_api(fast_app: FastApp) -> None:
    # given a prediction shown on the list, and a caller's key
    prediction = _shown_prediction(fast_app)
    caller = {API_KEY_HEADER: fast_app.caller_key}
    body = {"prediction_id": prediction, "subscribed": True}
    # when the caller's key reports an outcome for it, alone or in a batch
    one = fast_app.client.post("/outcomes", json=body, headers=caller)
    batch = fast_app.client.post("/outcomes/batch", json=[body], headers=caller)
    # then both are refused for the role, and nothing is recorded
    assert one.status_code == 403 and "integration" in one.text, one.text
    assert batch.status_code == 403, batch.text
    assert fast_app.services.outcome_store.get(prediction) is None, "nothing should be recorded"


def test_an_integration_key_reports_outcomes_and_nothing_else(fast_app: FastApp) -> None:
    # given a CRM's integration key, and a prediction shown on the list
    key = create_api_key(fast_app.services.access_store, "crm", "integration").key
    crm = {API_KEY_HEADER: key}
    prediction = _shown_prediction(fast_app)
    # when it reports the outcome / then it is recorded, and the CRM may read it back
    posted = fast_app.client.post(
        "/outcomes", json={"prediction_id": prediction, "subscribed": False}, headers=crm
    )
    assert posted.status_code == 201, posted.text
    assert fast_app.client.get(f"/outcomes/{prediction}", headers=crm).status_code == 200
    # and it may not list prospects, nor change the routing
    assert fast_app.client.get("/prospects", headers=crm).status_code == 403, "no list"
    routing = fast_app.client.put("/routing", json={"mode": "champion"}, headers=crm)
    assert routing.status_code == 403, f"an integration key changed routing: {routing.text}"


def test_ops_may_do_what_every_role_may() -> None:
    # given the three roles / then ops is allowed each, the others only their own
    assert all(allows("ops", role) for role in ("caller", "integration", "ops")), "ops: all"
    assert not allows("caller", "integration"), "a caller does not report outcomes"
    assert not allows("integration", "caller"), "a CRM does not list prospects"


def test_a_caller_cannot_label_another_prospect_s_prediction(fast_app: FastApp) -> None:
    # given two prospects of different profiles as the list shows them
    listed = fast_app.client.get(
        "/prospects", params={"page_size": 10}, headers={API_KEY_HEADER: fast_app.caller_key}
    ).json()["prospects"]
    first, other = listed[0], next(row for row in listed[1:] if row["job"] != listed[0]["job"])
    # when a caller records a subscription on `other`, citing the prediction shown for `first`
    call = fast_app.client.post(
        f"/prospects/{other['prospect_id']}/calls",
        json={"prediction_id": first["prediction_id"], "result": "subscribed"},
        headers={API_KEY_HEADER: fast_app.caller_key},
    )
    # then it is refused, naming the prediction, and neither a call nor an outcome is stored
    assert call.status_code == 422, f"another prospect's prediction: {call.status_code}"
    assert first["prediction_id"] in call.json()["detail"], call.text
    assert fast_app.services.outcome_store.get(first["prediction_id"]) is None, "no outcome"
    assert not fast_app.services.prospect_store.calls_of(other["prospect_id"]), "no call"
