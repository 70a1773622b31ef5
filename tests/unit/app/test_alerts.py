"""GET /alerts: the alerts the local receiver logged, for ops only."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.unit.app.conftest import FastApp

from telescore.core.alerts import Notification, alert_records
from telescore.io.alert_log import AlertLog, alert_log_path

NOTIFICATION = {
    "version": "4",
    "status": "firing",
    "receiver": "telescore-local",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "MLServerDown", "severity": "critical"},
            "annotations": {"summary": "MLServer is down at 127.0.0.1:8082"},
            "startsAt": "2025-01-01T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
        }
    ],
}


def test_ops_see_the_newest_alerts_first(fast_app: FastApp, tmp_path: Path) -> None:
    # given two notifications logged by the receiver under the app's state folder
    log = AlertLog(alert_log_path(tmp_path))
    first = Notification.model_validate(NOTIFICATION)
    log.append(alert_records(first, datetime(2025, 1, 1, 10, 1, tzinfo=UTC)))
    resolved = {**NOTIFICATION, "status": "resolved"}
    resolved["alerts"] = [{**NOTIFICATION["alerts"][0], "status": "resolved"}]
    log.append(
        alert_records(
            Notification.model_validate(resolved), datetime(2025, 1, 1, 10, 9, tzinfo=UTC)
        )
    )
    # when ops ask for the alerts
    answer = fast_app.client.get("/alerts", headers={"X-API-Key": fast_app.ops_key})
    # then both are there, the newest first, with what the rule said
    assert answer.status_code == 200, answer.text
    alerts = answer.json()
    assert [each["status"] for each in alerts] == ["resolved", "firing"], alerts
    assert alerts[1]["summary"] == "MLServer is down at 127.0.0.1:8082", alerts[1]
    assert alerts[1]["severity"] == "critical" and alerts[1]["ends_at"] is None, alerts[1]


def test_callers_may_not_read_the_alerts(fast_app: FastApp) -> None:
    # given a caller's key / when it asks for the alerts / then it is refused for its role
    answer = fast_app.client.get("/alerts", headers={"X-API-Key": fast_app.caller_key})
    assert answer.status_code == 403, answer.text
    # and with no key at all, 401
    assert fast_app.client.get("/alerts").status_code == 401, "no key should be a 401"


def test_no_alert_yet_is_an_empty_list(fast_app: FastApp) -> None:
    # given a state folder where nothing was logged / when ops ask / then the list is empty
    answer = fast_app.client.get("/alerts", headers={"X-API-Key": fast_app.ops_key})
    assert answer.status_code == 200 and answer.json() == [], answer.text


def test_a_limit_out_of_bounds_is_refused_naming_it(fast_app: FastApp) -> None:
    answer = fast_app.client.get("/alerts?limit=0", headers={"X-API-Key": fast_app.ops_key})
    assert answer.status_code == 422 and "limit" in answer.text, answer.text
