"""The outage drill's wait: the alert logged after the stop, or a clear error at the deadline."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from telescore.io.alert_log import AlertLog
from telescore.jobs import demo


def record(name: str, status: str, at: datetime) -> dict[str, Any]:
    """An alert record as the local receiver appends it."""
    return {
        "received_at": at.isoformat(),
        "status": status,
        "alertname": name,
        "severity": "critical",
        "summary": f"{name} summary",
    }


def test_the_wait_returns_the_alert_fired_after_the_stop(tmp_path: Path) -> None:
    # given a log with MLServerDown fired before the stop, resolved after it, another alert
    # after it, and MLServerDown fired again after it
    log = AlertLog(tmp_path / "alerts.jsonl")
    stop = datetime.now(UTC)
    log.append(
        [
            record(demo.OUTAGE_ALERT, "firing", stop - timedelta(minutes=5)),
            record(demo.OUTAGE_ALERT, "resolved", stop + timedelta(seconds=1)),
            record("ReleaseRolledBack", "firing", stop + timedelta(seconds=2)),
            record(demo.OUTAGE_ALERT, "firing", stop + timedelta(seconds=3)),
        ]
    )
    # when the drill waits for MLServerDown since the stop
    found = demo.wait_for_alert(log, demo.OUTAGE_ALERT, stop, timeout=1.0)
    # then it gets the firing one logged after the stop
    assert found["received_at"] == (stop + timedelta(seconds=3)).isoformat(), found
    assert found["status"] == "firing", found


def test_an_alert_fired_before_the_stop_does_not_count(tmp_path: Path) -> None:
    # given a log whose only MLServerDown fired before the stop, and another alert after it
    log = AlertLog(tmp_path / "alerts.jsonl")
    stop = datetime.now(UTC)
    log.append(
        [
            record(demo.OUTAGE_ALERT, "firing", stop - timedelta(seconds=30)),
            record("ReleaseRolledBack", "firing", stop + timedelta(seconds=1)),
        ]
    )
    told: list[float] = []
    started = time.monotonic()
    # when the drill waits for MLServerDown with a short deadline
    with pytest.raises(demo.AlertNotDeliveredError) as raised:
        demo.wait_for_alert(
            log, demo.OUTAGE_ALERT, stop, timeout=0.5, progress=told.append, interval=0.1
        )
    # then it gives up at the deadline, having told its progress, and says what the log holds
    waited = time.monotonic() - started
    assert 0.5 <= waited < 5, f"the wait should end at its deadline, not after {waited:.1f} s"
    assert told, "the wait should report the seconds waited while it looks"
    message = str(raised.value)
    assert f"no {demo.OUTAGE_ALERT} delivered" in message, message
    assert str(log.path) in message, f"the error should name the log: {message}"
    assert "ReleaseRolledBack" in message, f"the error should say what was received: {message}"
