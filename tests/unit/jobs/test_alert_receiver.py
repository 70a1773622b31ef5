"""The local alert receiver: Alertmanager's notifications, with its token, land in the alert log."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from telescore.io.alert_log import AlertLog
from telescore.jobs.alert_receiver import MAX_BODY_BYTES, AlertReceiver, serve

TOKEN = "receiver-token-for-tests"
NOTIFICATION = {
    "version": "4",
    "groupKey": '{}:{alertname="MLServerDown"}',
    "status": "firing",
    "receiver": "telescore-local",
    "groupLabels": {"alertname": "MLServerDown"},
    "externalURL": "http://127.0.0.1:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "MLServerDown", "severity": "critical", "instance": "a:8082"},
            "annotations": {"summary": "MLServer is down at a:8082", "description": "..."},
            "startsAt": "2025-03-01T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": "4b0a092c37310238",
        }
    ],
}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, AlertLog]]:
    """A receiver on a free port of 127.0.0.1; yields its URL and its alert log."""
    log = AlertLog(tmp_path / "alerts" / "alerts.jsonl")
    server = AlertReceiver(("127.0.0.1", 0), TOKEN, log)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(server, stop))
    thread.start()
    try:
        yield server.url, log
    finally:
        stop.set()
        thread.join()


def _post(url: str, body: object, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(url, content=json.dumps(body), headers=headers, timeout=5)


def test_a_notification_is_logged_one_record_per_alert(receiver) -> None:
    url, log = receiver
    # given a notification from Alertmanager with its token / when posted
    answer = _post(url, NOTIFICATION)
    # then it is taken, and the alert is in the log with what the rule said
    assert answer.status_code == 200 and answer.json() == {"recorded": 1}, answer.text
    (record,) = log.latest()
    assert record["alertname"] == "MLServerDown", record
    assert record["summary"] == "MLServer is down at a:8082", record
    assert record["labels"]["instance"] == "a:8082", record
    assert record["ends_at"] is None, "a firing alert has no end yet"


def test_a_resolved_alert_keeps_its_end(receiver) -> None:
    url, log = receiver
    resolved = {
        **NOTIFICATION,
        "status": "resolved",
        "alerts": [
            {**NOTIFICATION["alerts"][0], "status": "resolved", "endsAt": "2025-03-01T10:05:00Z"}
        ],
    }
    assert _post(url, resolved).status_code == 200
    assert log.latest()[0]["ends_at"] == "2025-03-01T10:05:00+00:00", log.latest()


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_without_the_token_nothing_is_logged(receiver, token: str | None) -> None:
    url, log = receiver
    # given no token, or a wrong one / when a notification is posted
    answer = _post(url, NOTIFICATION, token=token)
    # then it is refused, and the log stays empty
    assert answer.status_code == 401, answer.text
    assert log.latest() == [], "a refused notification was logged"


def test_a_malformed_notification_is_refused_naming_the_field(receiver) -> None:
    url, log = receiver
    broken = {**NOTIFICATION, "alerts": [{**NOTIFICATION["alerts"][0], "startsAt": "yesterday"}]}
    answer = _post(url, broken)
    assert answer.status_code == 422, answer.text
    assert "alerts.0.startsAt" in answer.json()["detail"], answer.text
    assert log.latest() == [], "a refused notification was logged"


def test_a_body_over_the_limit_is_refused_unread(receiver) -> None:
    url = httpx.URL(receiver[0])
    # given a request that declares a body over the limit (and sends none of it)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=5)
    connection.putrequest("POST", url.path)
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    connection.endheaders()
    # when the receiver answers / then it refuses it without waiting for the body
    answer = connection.getresponse()
    connection.close()
    assert answer.status == 413, answer.read()


def test_health_answers_and_other_paths_do_not(receiver) -> None:
    url, _ = receiver
    base = url.removesuffix("/alerts")
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200, "no health"
    assert httpx.post(f"{base}/other", timeout=5).status_code == 404, "an unknown path answered"


def test_the_log_reads_the_newest_first_and_skips_a_line_cut_by_a_crash(tmp_path: Path) -> None:
    # given three records and a line a crash cut short
    log = AlertLog(tmp_path / "alerts.jsonl")
    log.append([{"n": 1}, {"n": 2}, {"n": 3}])
    with log.path.open("a") as file:
        file.write('{"n": 4')
    # when the newest two are read / then they are 3 and 2, the cut line skipped
    assert log.latest(2) == [{"n": 3}, {"n": 2}], log.latest(2)
