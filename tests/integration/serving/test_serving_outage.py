"""Faults mid-traffic through a real MLServer: every prediction answered lands in MongoDB once.

MongoDB stopped, the shipper killed, MLServer itself killed with SIGKILL, a record MongoDB
refuses, a journal left by a model no longer served.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pandas as pd
import pytest
from tests.testdata.prospects import PROSPECT

from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import JournalEntry, entry_payload
from telescore.core.schema import FEATURES
from telescore.io.journal import JournalWriter
from telescore.io.prediction_store import PredictionStore
from telescore.io.serving_client import Scores, ServingClient, ServingError, read_metrics
from telescore.services.processes import ServiceProcess, wait_until
from telescore.serving.shipper import DEAD_LETTER_DIR, DEAD_LETTER_FILE

if TYPE_CHECKING:  # fixture types; conftest modules are not importable at run time
    from tests.integration.serving_fixtures import RegisteredVersions, ServedMLServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS_PER_REQUEST = 3
REQUESTS_PER_PHASE = 40
WAIT = 90.0  # a bound on a state, not a timing: a busy machine is slow, not wrong
READER_TIMEOUT_MS = 15_000
"""How long the test's own reads wait for nx-27017, busy ingesting the shipper's batches on a
loaded machine (the store's 2 s default is for requests that must fail fast)."""


def _metric(mlserver: ServedMLServer, name: str) -> float:
    """Return a prediction log metric as MLServer's metrics endpoint shows it."""
    metrics = read_metrics(mlserver.metrics_url, "telescore_prediction_log_", timeout=5)
    assert name in metrics, f"telescore_prediction_log_{name} is not exposed"
    return metrics[name]


def _children(server_pid: int, module: bytes) -> set[int]:
    """Return the processes `server_pid` started that run `module`."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().split(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        if parent == server_pid and module in command:
            pids.add(int(entry.name))
    return pids


def _shippers(server_pid: int) -> set[int]:
    return _children(server_pid, b"telescore.serving.shipper")


def _sender(
    client: ServingClient, rows: pd.DataFrame, answered: list[Scores]
) -> Callable[[], None]:
    def send() -> None:
        for _ in range(REQUESTS_PER_PHASE):
            answered.append(client.infer(rows))

    return send


def _assert_answered_predictions_stored(
    mlserver: ServedMLServer, answered: list[Scores], timeout: float = WAIT
) -> None:
    """Each prediction id answered is in MongoDB, under that id, with the score answered."""
    ids = [each for scored in answered for each in scored.prediction_ids]
    scores = dict(zip(ids, [s for scored in answered for s in scored.scores], strict=True))
    rows = sum(len(scored.scores) for scored in answered)
    assert len(set(ids)) == rows, f"{rows} rows answered under {len(set(ids))} distinct ids"
    with PredictionStore(
        mlserver.mongodb_uri, mlserver.database, timeout_ms=READER_TIMEOUT_MS
    ) as store:
        query = {"_id": {"$in": ids}}
        wait_until(lambda: store.count(query) == len(ids), timeout, what="answered predictions")
        stored = {record["_id"]: record["score"] for record in store.find(query)}
    assert stored == pytest.approx(scores), "a stored score differs from the one answered"


def test_mongodb_outage_mid_traffic_ends_with_every_prediction_stored(
    mlserver: ServedMLServer, mongodb: ServiceProcess, registered_versions: RegisteredVersions
) -> None:
    rows = registered_versions.features.head(ROWS_PER_REQUEST)
    answered: list[Scores] = []

    with ServingClient(mlserver.rest_url) as client:
        send = _sender(client, rows, answered)
        # given traffic while MongoDB is up
        send()
        # when MongoDB stops mid-traffic, requests keep being answered
        mongodb.stop()
        try:
            send()
            # and the rows wait in the journal, counted as spooled
            wait_until(lambda: _metric(mlserver, "spooled") > 0, WAIT, what="spooled rows")
            assert _metric(mlserver, "mongodb_up") == 0, "the metrics say MongoDB is down"
        finally:
            # and MongoDB comes back
            mongodb.start()
        send()

    # then every prediction answered is stored, and the backlog empties
    _assert_answered_predictions_stored(mlserver, answered)
    wait_until(lambda: _metric(mlserver, "spooled") == 0, WAIT, what="an empty backlog")
    assert _metric(mlserver, "mongodb_up") == 1, "the metrics say MongoDB is back"


def test_a_killed_shipper_is_restarted_and_every_prediction_is_stored(
    mlserver: ServedMLServer, registered_versions: RegisteredVersions
) -> None:
    rows = registered_versions.features.head(ROWS_PER_REQUEST)
    server_pid = mlserver.process.process.pid  # type: ignore[union-attr]
    answered: list[Scores] = []

    with ServingClient(mlserver.rest_url) as client:
        send = _sender(client, rows, answered)
        # given traffic, and one shipper for the journal both models write
        send()
        shippers = _shippers(server_pid)
        assert len(shippers) == 1, f"one shipper per journal: {shippers}"
        # when it is killed mid-traffic, requests keep being answered
        os.kill(shippers.pop(), signal.SIGKILL)
        send()
        # and a new shipper takes over
        wait_until(lambda: len(_shippers(server_pid)) == 1, WAIT, what="a restarted shipper")
        send()

    # then every prediction answered is stored
    _assert_answered_predictions_stored(mlserver, answered)


def test_sigkill_of_mlserver_under_load_loses_no_answered_prediction(
    mlserver: ServedMLServer, registered_versions: RegisteredVersions
) -> None:
    rows = registered_versions.features.head(ROWS_PER_REQUEST)
    answered: list[Scores] = []
    failed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop() -> None:
        with ServingClient(mlserver.rest_url, timeout=5.0) as client:
            while not stop.is_set():
                try:
                    scored = client.infer(rows)
                except (httpx.TransportError, ServingError) as error:
                    with lock:
                        failed.append(type(error).__name__)
                    time.sleep(0.05)  # the server is down: do not spin
                    continue
                with lock:
                    answered.append(scored)

    # given eight clients under way
    clients = [threading.Thread(target=client_loop) for _ in range(8)]
    for thread in clients:
        thread.start()
    try:
        wait_until(lambda: len(answered) >= 200, WAIT, what="traffic")
        # when MLServer is killed outright, mid-traffic, and started again
        os.kill(mlserver.process.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        mlserver.process.process.wait()  # type: ignore[union-attr]
        killed_at = len(answered)
        mlserver.process.start()
        wait_until(lambda: len(answered) >= killed_at + 200, WAIT, what="traffic after")
    finally:
        stop.set()
        for thread in clients:
            thread.join()

    # then requests failed only while it was down, and every prediction answered is stored
    assert failed, "the kill should have cut some requests off"
    _assert_answered_predictions_stored(mlserver, answered)


def test_a_record_mongodb_refuses_is_set_aside_and_later_ones_land(
    mlserver: ServedMLServer, registered_versions: RegisteredVersions
) -> None:
    rows = registered_versions.features.head(1)
    request_id = f"clash-{uuid.uuid4()}"
    letters = mlserver.journal / DEAD_LETTER_DIR / DEAD_LETTER_FILE
    set_aside_before = _metric(mlserver, "dead_lettered_total")
    with PredictionStore(
        mlserver.mongodb_uri, mlserver.database, timeout_ms=READER_TIMEOUT_MS
    ) as store:
        # given an operator's unique index that refuses a second row with one client id on one
        # route (a shadow logs the shown request's id again, on its own route; tests that reuse
        # a client id delete their records, or the index could not be built)
        index = store.collection.create_index(
            [("request_id", 1), ("row", 1), ("route", 1)],
            unique=True,
            name="one_row_per_client_id",
        )
        try:
            with ServingClient(mlserver.rest_url) as client:
                # when that client id is scored twice, then another request follows
                first = client.infer(rows, request_id=request_id)
                clash = client.infer(rows, request_id=request_id)
                later = client.infer(rows)
                # then the later one lands
                _assert_answered_predictions_stored(mlserver, [first, later])
            wait_until(
                lambda: _metric(mlserver, "dead_lettered_total") == set_aside_before + 1,
                WAIT,
                what="the refused row counted",
            )
        finally:
            store.collection.drop_index(index)
        # and the refused one is not stored but set aside, with MongoDB's reason
        assert store.count({"_id": clash.prediction_ids[0]}) == 0, "the clash was refused"
    kept = [line for line in letters.read_text().splitlines() if clash.prediction_ids[0] in line]
    assert len(kept) == 1, "the refused record is in the dead-letter file"
    assert "11000" in kept[0], f"the reason is MongoDB's duplicate-key error: {kept[0][:300]}"


def test_a_journal_left_by_a_model_no_longer_served_is_shipped_and_counted(
    mlserver: ServedMLServer, mongodb: ServiceProcess
) -> None:
    # given MongoDB down, and a journal segment left by a removed model's writer
    prediction_ids = PredictionIds().new(4)
    mongodb.stop()
    try:
        writer = JournalWriter(
            mlserver.journal,
            {
                "format": 1,
                "model_name": "telemarketing",
                "model_version": "0",
                "route": "challenger",
                "served_as": "telemarketing-removed",
                "features": list(FEATURES),
            },
        )
        columns = [[value] * 4 for value in _row_values()]
        entry = JournalEntry(
            prediction_ids, "left-over", time.time(), 1.0, columns, [0.5] * 4, [[]] * 4
        )
        writer.append(entry_payload(entry), 4)
        writer.close()

        # when the shipper next looks, then it counts those rows as waiting
        wait_until(lambda: _metric(mlserver, "spooled") >= 4, WAIT, what="the rows counted")
    finally:
        mongodb.start()

    # and ships them once MongoDB is back
    with PredictionStore(
        mlserver.mongodb_uri, mlserver.database, timeout_ms=READER_TIMEOUT_MS
    ) as store:
        wait_until(
            lambda: store.count({"_id": {"$in": prediction_ids}}) == 4, WAIT, what="left-overs"
        )
        assert {r["model_version"] for r in store.find({"request_id": "left-over"})} == {"0"}
    wait_until(lambda: _metric(mlserver, "spooled") == 0, WAIT, what="an empty backlog")


def _row_values() -> list[object]:
    return [PROSPECT[name] for name in FEATURES]
