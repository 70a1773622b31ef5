"""Calls recorded over the API, and the outcomes they give the predictions shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.unit.app.conftest import FastApp

from telescore.core.access import API_KEY_HEADER
from telescore.core.prediction_ids import PredictionIds


def _shown(fast_app: FastApp, position: int = 0) -> dict[str, Any]:
    """Return a row of the list as a caller sees it (its prediction is logged)."""
    listed = fast_app.client.get(
        "/prospects", params={"page_size": 10}, headers={API_KEY_HEADER: fast_app.caller_key}
    )
    assert listed.status_code == 200, listed.text
    row: dict[str, Any] = listed.json()["prospects"][position]
    return row


def _call(fast_app: FastApp, prospect_id: str, prediction_id: str, result: str) -> Any:
    return fast_app.client.post(
        f"/prospects/{prospect_id}/calls",
        json={"prediction_id": prediction_id, "result": result},
        headers={API_KEY_HEADER: fast_app.caller_key},
    )


def _outcome(client: TestClient, prediction_id: str, key: str) -> Any:
    return client.get(f"/outcomes/{prediction_id}", headers={API_KEY_HEADER: key})


def test_a_subscribed_call_records_the_outcome_of_the_prediction_shown(fast_app: FastApp) -> None:
    # given the best prospect as the list shows it, its prediction logged
    row = _shown(fast_app)
    # when the caller records that the prospect subscribed
    call = _call(fast_app, row["prospect_id"], row["prediction_id"], "subscribed")
    # then the outcome is recorded for that prediction, by that caller
    assert call.status_code == 201, call.text
    assert call.json()["outcome_status"] == "recorded", call.text
    outcome = _outcome(fast_app.client, row["prediction_id"], fast_app.caller_key).json()
    assert outcome["subscribed"] is True and outcome["source"].startswith("app:"), outcome
    # and the prospect shows as called, and has left the not-yet-called list
    again = _shown(fast_app)
    assert again["prospect_id"] == row["prospect_id"], "the list keeps its order"
    assert (again["called"], again["last_result"]) == (True, "subscribed"), again
    not_called = fast_app.client.get(
        "/prospects",
        params={"not_called": True, "page_size": 200},
        headers={API_KEY_HEADER: fast_app.caller_key},
    ).json()
    assert row["prospect_id"] not in {each["prospect_id"] for each in not_called["prospects"]}


def test_a_call_before_its_prediction_is_logged_keeps_the_outcome_pending(
    fast_app: FastApp,
) -> None:
    # given a prediction answered a moment ago, not in the prediction log yet
    row = _shown(fast_app)
    [unlogged] = PredictionIds().new(1)
    # when a call on it is recorded as declined
    call = _call(fast_app, row["prospect_id"], unlogged, "declined")
    # then the call is stored, its outcome pending until the prediction is logged
    assert call.status_code == 201, call.text
    assert call.json()["outcome_status"] == "pending", call.text
    outcome = _outcome(fast_app.client, unlogged, fast_app.caller_key).json()
    assert (outcome["subscribed"], outcome["pending"]) == (False, True), outcome
    assert len(fast_app.services.prospect_store.calls_of(row["prospect_id"])) == 1, "call stored"


def test_a_different_outcome_is_a_conflict_and_stores_no_call(fast_app: FastApp) -> None:
    # given a call that recorded a subscription for the prediction shown
    row = _shown(fast_app, position=1)
    first = _call(fast_app, row["prospect_id"], row["prediction_id"], "subscribed")
    assert first.status_code == 201, first.text
    # when another call says the same prospect declined, for the same prediction
    conflict = _call(fast_app, row["prospect_id"], row["prediction_id"], "declined")
    # then it is refused (409), the first outcome stays, and the second call is not stored
    assert conflict.status_code == 409, conflict.text
    outcome = _outcome(fast_app.client, row["prediction_id"], fast_app.caller_key).json()
    assert outcome["subscribed"] is True, f"the first outcome should stay: {outcome}"
    calls = fast_app.services.prospect_store.calls_of(row["prospect_id"])
    assert [call["result"] for call in calls] == ["subscribed"], calls


def test_a_call_without_an_answer_records_no_outcome(fast_app: FastApp) -> None:
    # given the list as shown / when a call is recorded as not answered
    row = _shown(fast_app, position=2)
    call = _call(fast_app, row["prospect_id"], row["prediction_id"], "no_answer")
    # then the call is stored, and no outcome is (no answer is no label)
    assert call.status_code == 201, call.text
    assert call.json()["outcome_status"] is None, call.text
    assert _outcome(fast_app.client, row["prediction_id"], fast_app.caller_key).status_code == 404
    assert len(fast_app.services.prospect_store.calls_of(row["prospect_id"])) == 1, "call stored"


@pytest.mark.parametrize(
    ("prospect_id", "issued_ago", "said"),
    [
        ("NOPE", timedelta(0), "unknown prospect ids: NOPE"),
        ("P00001", timedelta(days=2), "expired:"),
    ],
    ids=["unknown-prospect", "expired-prediction"],
)
def test_a_call_on_an_unknown_prospect_or_an_expired_prediction_is_404(
    fast_app: FastApp, prospect_id: str, issued_ago: timedelta, said: str
) -> None:
    # given a prediction id issued `issued_ago`, not logged
    when = datetime.now(UTC) - issued_ago
    [prediction_id] = PredictionIds(clock_ns=lambda: int(when.timestamp() * 1e9)).new(1)
    # when a subscription is recorded on it
    call = _call(fast_app, prospect_id, prediction_id, "subscribed")
    # then it is refused, saying why, and nothing is stored
    assert call.status_code == 404 and said in call.json()["detail"], call.text
    assert not fast_app.services.prospect_store.calls_of(prospect_id), "no call should be stored"
