"""The app's and the loop's metrics reach Prometheus: a real one scrapes a running app.

The app runs under uvicorn as `telescore up` runs it, on the session's nx-27017 (a database of
its own, holding the seeded story of `tests.loop_records`) and the state folder the embedded
Prometheus shares with it (the generated metrics token). Prometheus, started as `telescore up`
starts it, scrapes it with that token every second; its query API then answers with the
seeded figures; and a rollback recorded while it scrapes fires the rule that reads them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from tests.integration.services.test_alert_delivery import WAIT, Alerting, _firing, alerting
from tests.loop_records import EXPECTED, roll_back, seed_loop

from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.release_store import ReleaseStore
from telescore.services.embedded import outcomes_api
from telescore.services.processes import ServiceProcess, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _value(stack: Alerting, expression: str) -> float | None:
    """The value of a one-series expression in Prometheus now (None: no series)."""
    found = stack.prometheus.query(expression)
    return float(found[0]["value"][1]) if found else None


def test_the_loop_s_metrics_appear_in_prometheus_with_the_recorded_values(
    tmp_path: Path, mongodb: ServiceProcess
) -> None:
    # given the loop's seeded records but the rollback, and the app running on them
    uri, database = mongodb.uri, f"scraped_{uuid.uuid4().hex[:12]}"  # type: ignore[attr-defined]
    with (
        MonitoringStore(uri, database) as monitoring,
        ReleaseStore(uri, database) as releases,
        OutcomeStore(uri, database) as outcomes,
    ):
        seed_loop(monitoring, releases, outcomes, with_rollback=False)
    state, port = tmp_path / "state", free_port()
    app = outcomes_api(
        state,
        port,
        env={
            "TELESCORE_ENV_FILE": str(tmp_path / "no.env"),
            "TELESCORE_STATE_DIR": str(state),
            "TELESCORE_MONGODB_URI": uri,
            "TELESCORE_MONGODB_DATABASE": database,
            # No MLServer: the app answers 503 on scoring, its metrics still come.
            "TELESCORE_SERVING_URL": f"http://127.0.0.1:{free_port()}",
        },
    )
    # when Prometheus scrapes it (with the token both read under the state folder)
    with (
        alerting(state, f"127.0.0.1:{free_port()}", f"127.0.0.1:{port}") as stack,
        app.running(),
        ReleaseStore(uri, database) as releases,
    ):
        wait_until(lambda: _value(stack, 'up{job="web"}') == 1.0, WAIT, what="the app scraped")
        wait_until(
            lambda: _value(stack, "telescore_monitor_verdict") is not None,
            WAIT,
            what="the loop's metrics in Prometheus",
        )
        # then Prometheus holds the recorded figures of the loop, no rollback counted from 0
        wanted = {
            'telescore_release_decisions_total{action="rollback"}': 0.0,
            'telescore_release_decisions_total{action="wait"}': 2.0,
            "telescore_retrains_started_total": float(EXPECTED.retrains_started),
            "telescore_retrains_failed_total": float(EXPECTED.retrains_failed),
            "telescore_monitor_label_coverage": EXPECTED.label_coverage,
            "telescore_monitor_window_predictions": float(EXPECTED.predictions),
            "telescore_monitor_degraded_windows_since_retrain": float(EXPECTED.degraded_in_a_row),
            "telescore_monitor_last_run_timestamp_seconds": EXPECTED.last_run_at.timestamp(),
            f'telescore_monitor_verdict{{verdict="{EXPECTED.verdict}"}}': 1.0,
            "telescore_outcomes_pending": float(EXPECTED.pending_outcomes),
        }
        found = {expression: _value(stack, expression) for expression in wanted}
        assert found == pytest.approx(wanted), f"in Prometheus: {found}"
        # and the app's own metrics are there too: its requests (a scrape counted by the next)
        wait_until(
            lambda: (
                (_value(stack, 'sum(telescore_app_requests_total{route="/metrics"})') or 0) >= 1
            ),
            WAIT,
            what="the app's requests in Prometheus",
        )
        assert not _firing(stack, "ReleaseRolledBack"), "no rollback yet, and the alert fires"

        # when the promotion records a rollback
        roll_back(releases)

        # then Prometheus counts it, and the rule that reads it fires (its `for:` shortened)
        wait_until(
            lambda: _value(stack, 'telescore_release_decisions_total{action="rollback"}') == 1.0,
            WAIT,
            what="the rollback counted in Prometheus",
        )
        wait_until(
            lambda: bool(_firing(stack, "ReleaseRolledBack")),
            WAIT,
            what="ReleaseRolledBack firing on the rollback recorded",
        )
