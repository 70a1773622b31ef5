"""Faults mid-traffic (MongoDB down, a log writer killed): MLServer keeps answering, and every
prediction lands once."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pandas as pd
import pytest

from telescore.io.prediction_store import PredictionStore
from telescore.io.serving_client import ServingClient
from telescore.services.processes import ServiceProcess, wait_until

if TYPE_CHECKING:  # fixture types; conftest modules are not importable at run time
    from conftest import RegisteredVersions, ServedMLServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS_PER_REQUEST = 3
REQUESTS_PER_PHASE = 40


@pytest.fixture
def metrics_url(mlserver: ServedMLServer) -> str:
    """Where MLServer exposes its Prometheus metrics, the prediction log's among them."""
    settings = json.loads((mlserver.repository / "settings.json").read_text())
    return f"http://127.0.0.1:{settings['metrics_port']}/metrics"


def _metric(metrics_url: str, name: str) -> float:
    """Return a prediction log metric as MLServer's metrics endpoint shows it."""
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith(f"telescore_prediction_log_{name} "):
            return float(line.split()[1])
    raise AssertionError(f"telescore_prediction_log_{name} is not exposed")


def _writer_pids(server_pid: int) -> set[int]:
    """Return the prediction log writer processes MLServer started."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().split(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        if parent == server_pid and b"telescore.serving.log_writer" in command:
            pids.add(int(entry.name))
    return pids


def _sender(
    client: ServingClient, rows: pd.DataFrame, prefix: str, sent: list[str]
) -> Callable[[str], None]:
    def send(phase: str) -> None:
        for index in range(REQUESTS_PER_PHASE):
            request_id = f"{prefix}-{phase}-{index}"
            scored = client.infer(rows, request_id=request_id)
            assert scored.request_id == request_id, "every request must be answered"
            sent.append(request_id)

    return send


def _assert_each_row_once(mlserver: ServedMLServer, sent: list[str], timeout: float) -> None:
    expected = len(sent) * ROWS_PER_REQUEST
    with PredictionStore(mlserver.mongodb_uri, mlserver.database) as store:
        query = {"request_id": {"$in": sent}}
        wait_until(lambda: store.count(query) >= expected, timeout, what="logged predictions")
        records = store.find(query)
    ids = [record["_id"] for record in records]
    assert len(ids) == expected, f"{len(ids)} records for {expected} scored rows"
    assert len(set(ids)) == len(ids), "a prediction was written twice"
    assert {record["request_id"] for record in records} == set(sent), "a request is missing"


def test_mongodb_outage_mid_traffic_ends_with_every_prediction_once(
    mlserver: ServedMLServer,
    mongodb: ServiceProcess,
    registered_versions: RegisteredVersions,
    metrics_url: str,
) -> None:
    rows: pd.DataFrame = registered_versions.features.head(ROWS_PER_REQUEST)
    sent: list[str] = []

    with ServingClient(mlserver.rest_url) as client:
        send = _sender(client, rows, f"outage-{uuid.uuid4().hex[:8]}", sent)
        # given traffic while MongoDB is up
        send("before")
        # when MongoDB stops mid-traffic, requests keep being served
        mongodb.stop()
        try:
            send("during")
            # and the log, failing to write, spills to its spool (not merely buffered)
            wait_until(lambda: _metric(metrics_url, "spooled") > 0, 60, what="spooled records")
        finally:
            # and MongoDB comes back
            mongodb.start()
        send("after")

    # then every row of every request is in the collection exactly once: replay waits out the
    # writer's back-off (capped at 30 s) after MongoDB returns
    _assert_each_row_once(mlserver, sent, 90)
    wait_until(lambda: _metric(metrics_url, "spooled") == 0, 60, what="an empty spool")


def test_killed_log_writer_is_restarted_and_every_prediction_lands_once(
    mlserver: ServedMLServer, registered_versions: RegisteredVersions, metrics_url: str
) -> None:
    rows: pd.DataFrame = registered_versions.features.head(ROWS_PER_REQUEST)
    server_pid = mlserver.process.process.pid  # type: ignore[union-attr]
    sent: list[str] = []
    dropped_before = _metric(metrics_url, "dropped_total")

    with ServingClient(mlserver.rest_url) as client:
        send = _sender(client, rows, f"killed-{uuid.uuid4().hex[:8]}", sent)
        # given traffic, and one writer process per served model
        send("before")
        writers = _writer_pids(server_pid)
        assert len(writers) == 2, f"one writer each for champion and challenger: {writers}"
        # when the writers are killed mid-traffic, requests keep being served
        for pid in writers:
            os.kill(pid, signal.SIGKILL)
        send("during")
        # and new writers take over
        wait_until(
            lambda: len(_writer_pids(server_pid) - writers) == 2, 60, what="restarted writers"
        )
        send("after")

    # then every row of every request is in the collection exactly once
    _assert_each_row_once(mlserver, sent, 60)
    assert _metric(metrics_url, "dropped_total") == dropped_before, "nothing was dropped"
