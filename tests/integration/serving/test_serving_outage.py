"""MongoDB goes down mid-traffic: MLServer keeps answering and every prediction lands once."""

from __future__ import annotations

import json
import uuid
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


def _spooled(metrics_url: str) -> float:
    """Return the prediction log's spooled gauge as MLServer's metrics endpoint shows it."""
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith("telescore_prediction_log_spooled "):
            return float(line.split()[1])
    raise AssertionError("telescore_prediction_log_spooled is not exposed")


def test_mongodb_outage_mid_traffic_ends_with_every_prediction_once(
    mlserver: ServedMLServer, mongodb: ServiceProcess, registered_versions: RegisteredVersions
) -> None:
    rows: pd.DataFrame = registered_versions.features.head(ROWS_PER_REQUEST)
    settings = json.loads((mlserver.repository / "settings.json").read_text())
    metrics_url = f"http://127.0.0.1:{settings['metrics_port']}/metrics"
    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    sent: list[str] = []

    def send(phase: str) -> None:
        for index in range(REQUESTS_PER_PHASE):
            request_id = f"{prefix}-{phase}-{index}"
            scored = client.infer(rows, request_id=request_id)
            assert scored.request_id == request_id, "every request must be answered"
            sent.append(request_id)

    with ServingClient(mlserver.rest_url) as client:
        # given traffic while MongoDB is up
        send("before")
        # when MongoDB stops mid-traffic, requests keep being served
        mongodb.stop()
        try:
            send("during")
            # and the log, failing to write, spills to its spool (not merely buffered)
            wait_until(lambda: _spooled(metrics_url) > 0, 60, what="records in the spool")
        finally:
            # and MongoDB comes back
            mongodb.start()
        send("after")

    # then every row of every request is in the collection exactly once
    expected = len(sent) * ROWS_PER_REQUEST
    with PredictionStore(mlserver.mongodb_uri, mlserver.database) as store:
        query = {"request_id": {"$in": sent}}
        # Replay waits out the writer's back-off (capped at 30 s) after MongoDB returns.
        wait_until(lambda: store.count(query) >= expected, 90, what="replayed predictions")
        records = store.find(query)
    wait_until(lambda: _spooled(metrics_url) == 0, 60, what="an empty spool")
    ids = [record["_id"] for record in records]
    assert len(ids) == expected, f"{len(ids)} records for {expected} scored rows"
    assert len(set(ids)) == len(ids), "a prediction was written twice"
    assert {record["request_id"] for record in records} == set(sent), "a request is missing"
