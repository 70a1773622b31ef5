"""`telescore status`: the seeded loop on nx-27017, every other service down and said so."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console
from tests.loop_records import EXPECTED, NOW, seed_loop
from typer.testing import CliRunner

from telescore.cli import app
from telescore.cli_status import render_status
from telescore.core.loop_status import LoopStatus
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs.status import Alert, PredictionLog, Service, Status
from telescore.services.processes import ServiceProcess, free_port


@pytest.fixture
def platform_env(
    mongodb: ServiceProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """Settings of a platform whose MongoDB is the session's, every other service on a port
    nothing listens on; returns MongoDB's URI and the database."""
    uri, database = mongodb.uri, f"status_{uuid.uuid4().hex[:12]}"  # type: ignore[attr-defined]
    nowhere = {
        "TELESCORE_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "TELESCORE_PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
        "TELESCORE_SERVING_URL": f"http://127.0.0.1:{free_port()}",
        "TELESCORE_SERVING_METRICS_PORT": str(free_port()),
        "TELESCORE_EVIDENTLY_PORT": str(free_port()),
        "TELESCORE_API_PORT": str(free_port()),
        "TELESCORE_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "TELESCORE_ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}",
    }
    for name, value in {
        **nowhere,
        "TELESCORE_ENV_FILE": str(tmp_path / "no.env"),
        "TELESCORE_STATE_DIR": str(tmp_path / "state"),
        "TELESCORE_MONGODB_URI": uri,
        "TELESCORE_MONGODB_DATABASE": database,
    }.items():
        monkeypatch.setenv(name, value)
    return uri, database


def test_status_shows_the_loop_and_says_which_services_do_not_answer(
    platform_env: tuple[str, str],
) -> None:
    # given the seeded loop in MongoDB, and no MLServer, Alertmanager or UI answering
    uri, database = platform_env
    with (
        MonitoringStore(uri, database) as monitoring,
        ReleaseStore(uri, database) as releases,
        OutcomeStore(uri, database) as outcomes,
    ):
        seed_loop(monitoring, releases, outcomes)
    # when `telescore status` runs
    result = CliRunner().invoke(app, ["status"], env={"COLUMNS": "200"})
    # then it succeeds, showing the last window, the decisions and the backlog
    output = result.output
    assert result.exit_code == 0, f"exit code {result.exit_code}: {output}"
    for shown in (
        f"{EXPECTED.verdict} (seeded: {EXPECTED.verdict})",
        f"{EXPECTED.predictions} predictions, label coverage 40%",
        "ROC AUC 0.710, calibration gap 0.080",
        f"{EXPECTED.retrains_started} started, {EXPECTED.retrains_failed} failed, "
        f"{EXPECTED.retrains_promoted} promoted",
        "1 promote, 1 rollback, 2 wait, 0 superseded",
        "rollback challenger 5 over champion 3",
        f"{EXPECTED.pending_outcomes} waiting for their prediction",
        EXPECTED.routing_mode,
    ):
        assert shown in output, f"{shown!r} not in:\n{output}"
    # and each service that does not answer is said so on its line
    for line in ("MLServer", "Prediction log", "Alertmanager", "Prefect UI", "MLflow UI"):
        row = next((each for each in output.splitlines() if line in each), "")
        assert "not answering" in row, f"{line}: {row!r} in:\n{output}"


def test_status_without_mongodb_says_what_to_run_and_fails(
    platform_env: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a MongoDB that does not answer
    monkeypatch.setenv("TELESCORE_MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}")
    # when `telescore status` runs
    result = CliRunner().invoke(app, ["status"], env={"COLUMNS": "200"})
    # then it fails, saying MongoDB is unreachable and what to run
    assert result.exit_code == 1, f"exit code {result.exit_code}: {result.output}"
    assert "MongoDB is unreachable" in result.output, result.output
    assert "telescore up" in result.output, f"what to run: {result.output}"


def test_rendering_shows_served_versions_alerts_and_the_journal() -> None:
    # given a status with versions served, an alert firing and a journal with a backlog
    loop = LoopStatus(
        last_window=None,
        window_seconds=None,
        last_run_at=NOW - timedelta(hours=3),
        degraded_windows_since_retrain=0,
        retrains_started=0,
        retrains_failed=0,
        retrains_promoted=0,
        release_decisions={"promote": 0, "rollback": 0, "wait": 0, "superseded": 0},
        last_retrain=None,
        last_release=None,
        routing_mode="canary",
        canary_weight=12.5,
        pending_outcomes=0,
        served={"champion": "7", "challenger": "8"},
    )
    status = Status(
        loop=loop,
        serving_url="http://mlserver",
        prediction_log=PredictionLog(spooled=42, dead_lettered=1, mongodb_up=False),
        alertmanager_url="http://alertmanager",
        alerts=[Alert("ReleaseRolledBack", "warning", "A release was rolled back", "then")],
        alerts_problem=None,
        services=[Service("Prefect UI", "http://prefect", answering=True)],
    )
    # when it is rendered
    console = Console(record=True, width=200)
    console.print(render_status(status, NOW))
    text = console.export_text()
    # then each part is on its line
    for shown in (
        "version 7",
        "version 8",
        "canary, 12.5% of prospects to the challenger",
        "3.0 h ago",
        "none yet",
        "42 rows spooled (waiting for MongoDB), 1 dead letters; MongoDB DOWN",
        "Alert ReleaseRolledBack",
        "warning: A release was rolled back",
        "http://prefect",
    ):
        assert shown in text, f"{shown!r} not in:\n{text}"
    assert "not answering" not in text, f"every service answered:\n{text}"
