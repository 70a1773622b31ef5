"""PredictionLog against nx-27017: nothing lost, nothing doubled, the request path never waits."""

from __future__ import annotations

import errno
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest
from prometheus_client import CollectorRegistry

from telescore.core.predictions import prediction_records
from telescore.io.prediction_store import PredictionStore
from telescore.io.spool import Spool
from telescore.services.processes import ServiceProcess, free_port, wait_until
from telescore.serving.prediction_log import PredictionLog

pytestmark = pytest.mark.integration

WAIT = 20.0
"""Upper bound for any condition to become true; tests poll, they do not sleep for luck."""


def _request(request_id: str, rows: int = 4) -> list[dict[str, Any]]:
    return prediction_records(
        request_id=request_id,
        model_name="telemarketing",
        model_version="1",
        route="champion",
        rows=[{"age": 30 + i, "job": "admin."} for i in range(rows)],
        scores=[0.5] * rows,
        latency_ms=3.0,
        out_of_range=[[] for _ in range(rows)],
        timestamp=datetime.now(UTC),
    )


class _Harness:
    """A log on a fresh database and spool, with helpers to read its metrics and the store."""

    def __init__(self, uri: str, spool: Path, **options: Any) -> None:
        self.uri = uri
        self.database = f"test_{uuid.uuid4().hex[:12]}"
        self.spool = spool
        self.registry = CollectorRegistry()
        self.options = {"flush_interval": 0.05, "initial_backoff": 0.1, "max_backoff": 0.5}
        self.options.update(options)

    def store(self) -> PredictionStore:
        return PredictionStore(self.uri, self.database)

    def log(self, **options: Any) -> PredictionLog:
        return PredictionLog(
            self.store, self.spool, registry=self.registry, **{**self.options, **options}
        )

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(f"telescore_prediction_log_{name}") or 0.0

    def stored_ids(self) -> list[str]:
        with self.store() as store:
            return [document["_id"] for document in store.find()]


@pytest.fixture
def harness(mongodb: ServiceProcess, tmp_path: Path) -> _Harness:
    return _Harness(mongodb.uri, tmp_path / "spool")  # type: ignore[attr-defined]


def _ids(records: list[dict[str, Any]]) -> list[str]:
    return [record["_id"] for record in records]


def _wait(check: Callable[[], bool], what: str) -> None:
    wait_until(check, WAIT, what=what, interval=0.02)


def test_mongodb_outage_mid_traffic_loses_and_doubles_nothing(
    mongodb: ServiceProcess, harness: _Harness
) -> None:
    # Given a running log and a client submitting predictions continuously
    log = harness.log(batch_size=50)
    log.start()
    submitted: list[str] = []
    slowest_submit = 0.0
    stop = threading.Event()

    def client() -> None:
        nonlocal slowest_submit
        number = 0
        while not stop.is_set():
            records = _request(f"req-{number}")
            started = time.monotonic()
            log.submit(records)
            slowest_submit = max(slowest_submit, time.monotonic() - started)
            submitted.extend(_ids(records))
            number += 1
            time.sleep(0.01)

    traffic = threading.Thread(target=client, name="test-client")
    traffic.start()
    max_spooled = 0.0

    def spooled_seen() -> float:
        nonlocal max_spooled
        max_spooled = max(max_spooled, harness.metric("spooled"))
        return max_spooled

    try:
        _wait(lambda: harness.metric("written_total") >= 200, "first writes")

        # When MongoDB stops mid-traffic, traffic goes on, and MongoDB comes back
        mongodb.stop()
        try:
            down_from = len(submitted)
            _wait(lambda: spooled_seen() > 0, "records spooled while MongoDB is down")
            _wait(lambda: len(submitted) >= down_from + 300, "traffic while MongoDB is down")
            spooled_seen()
        finally:
            mongodb.start()
        written_at_restart = harness.metric("written_total")
        _wait(
            lambda: harness.metric("written_total") >= written_at_restart + 200,
            "writes after MongoDB is back",
        )
    finally:
        stop.set()
        traffic.join()
    _wait(
        lambda: harness.metric("spooled") == 0 and harness.metric("pending") == 0,
        "spool replayed and buffer drained",
    )
    spooled_before_close = harness.metric("spooled")
    log.close(timeout=10)

    # Then every record submitted is stored exactly once
    stored = harness.stored_ids()
    assert len(stored) == len(submitted), f"{len(submitted)} submitted, {len(stored)} stored"
    assert set(stored) == set(submitted), "the stored ids are exactly the submitted ones"
    # And the outage went through the spool, which is empty at the end
    assert max_spooled > 0, "records must have been spooled while MongoDB was down"
    assert spooled_before_close == 0, "the spooled gauge returns to 0 once replayed"
    assert harness.metric("spooled") == 0, "the spooled gauge is 0 after close"
    assert harness.metric("pending") == 0, "nothing is left in memory"
    assert harness.metric("dropped_total") == 0, "nothing was dropped"
    # Duplicates from an ambiguous failure count as written again, so at least every record.
    assert harness.metric("written_total") >= len(submitted), "every record counted as written"
    # And the client never waited on MongoDB (its timeouts are over a second)
    assert slowest_submit < 0.5, f"submit blocked for {slowest_submit:.3f} s"


def test_buffer_overflow_goes_to_the_spool_then_to_mongodb(harness: _Harness) -> None:
    # Given a log whose buffer holds 10 records and whose writer has not started yet
    log = harness.log(batch_size=10, max_buffer=10)
    requests = [_request(f"req-{n}", rows=5) for n in range(10)]

    # When 50 records are submitted
    for records in requests:
        log.submit(records)

    # Then the buffer and each overflowing request go to the spool in arrival order, none lost
    assert harness.metric("pending") == 5, "only the request after the last overflow waits"
    assert harness.metric("spooled") == 45, "the overflow and the buffer before it are spooled"
    assert harness.metric("dropped_total") == 0, "overflow is not a drop"
    assert log.durable == 45, "the first 45 records, all spooled, are durable"

    # And once the writer runs, all 50 reach MongoDB once each
    with log:
        _wait(lambda: log.spooled == 0 and log.pending == 0, "overflow replayed")
    expected = {i for records in requests for i in _ids(records)}
    stored = harness.stored_ids()
    assert len(stored) == 50, f"every record stored exactly once, found {len(stored)}"
    assert set(stored) == expected, "the stored ids are the submitted ones"
    assert harness.metric("spooled") == 0, "the spool is empty at the end"
    assert log.durable == 50, "every record is durable"


def test_replaying_records_already_written_stores_one_copy(harness: _Harness) -> None:
    # Given 20 records already in MongoDB, and the same records left in the spool by a crash
    records = [record for n in range(5) for record in _request(f"req-{n}")]
    with harness.store() as store:
        store.insert(records)
    with Spool(harness.spool) as spool:
        spool.append(records)

    # When a log opens that spool, starts, and the same records are also submitted again
    log = harness.log()
    assert harness.metric("spooled") == 20, "the leftover spool is reported when opened"
    with log:
        log.submit(records)
        _wait(lambda: harness.metric("written_total") >= 40, "replay and resubmission")
        _wait(lambda: log.spooled == 0 and log.pending == 0, "spool replayed")

    # Then each record is stored exactly once, and the repeats were not errors
    stored = harness.stored_ids()
    assert sorted(stored) == sorted(_ids(records)), "one copy of each record"
    assert harness.metric("dropped_total") == 0, "a duplicate is already written, not dropped"


def test_close_while_mongodb_is_down_spools_for_the_next_log(
    mongodb: ServiceProcess, harness: _Harness
) -> None:
    # Given a log that has written once, then MongoDB stops
    records = [record for n in range(10) for record in _request(f"req-{n}")]
    log = harness.log()
    log.start()
    log.submit(records[:8])
    _wait(lambda: harness.metric("written_total") >= 8, "first write")
    mongodb.stop()
    try:
        # When more records arrive and the log is closed while MongoDB is still down
        log.submit(records[8:])
        log.close(timeout=5)
        leftover = Spool(harness.spool)
        spooled = leftover.pending
        leftover.close()
    finally:
        mongodb.start()

    # Then nothing is lost: the records wait in the spool
    assert spooled == 32, f"the unwritten records must be spooled, found {spooled}"
    # And the next log on that spool writes them once MongoDB is back
    with harness.log() as next_log:
        _wait(lambda: next_log.spooled == 0, "leftover spool replayed")
    stored = harness.stored_ids()
    assert sorted(stored) == sorted(_ids(records)), "every record stored exactly once"


def test_a_record_mongodb_cannot_hold_is_dropped_alone(harness: _Harness) -> None:
    # Given a batch where one record holds an integer BSON cannot encode
    good = _request("good")
    bad = {**_request("bad", rows=1)[0], "score": 2**70}

    # When submitted through a running log
    with harness.log() as log:
        log.submit([*good, bad])
        _wait(lambda: harness.metric("written_total") >= 4, "good records written")
        _wait(lambda: log.pending == 0 and log.spooled == 0, "batch settled")

    # Then the good records are stored, the bad one is dropped and counted, nothing blocks
    assert sorted(harness.stored_ids()) == sorted(_ids(good)), "good records are stored"
    assert harness.metric("dropped_total") == 1, "only the unencodable record is dropped"


def test_spool_failure_is_counted_as_dropped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given MongoDB unreachable and a spool whose disk is full
    def full_disk(path: Path) -> IO[bytes]:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    harness = _Harness(f"mongodb://127.0.0.1:{free_port()}", tmp_path / "spool")
    log = PredictionLog(
        lambda: PredictionStore(harness.uri, harness.database, timeout_ms=200),
        harness.spool,
        registry=harness.registry,
        batch_size=5,
        max_buffer=10,
        flush_interval=0.05,
        spool_opener=full_disk,
    )

    # When records overflow the buffer, and the rest cannot be written at close
    with caplog.at_level(logging.ERROR, logger="telescore.serving.prediction_log"):
        log.submit(_request("a", rows=8))
        log.submit(_request("b", rows=8))  # over max_buffer: straight to the (full) spool
        log.start()
        log.close(timeout=5)

    # Then every record is counted as dropped, and each drop is logged at ERROR
    assert harness.metric("dropped_total") == 16, "records the spool refused are dropped"
    assert harness.metric("written_total") == 0, "nothing reached MongoDB"
    assert harness.metric("spooled") == 0, "nothing is in the spool"
    drops = [r for r in caplog.records if r.levelno == logging.ERROR and "DROPPED" in r.message]
    assert drops, "a drop must be logged at ERROR level"
    assert "disk full" in drops[0].message, "the log says why records were dropped"


def test_submit_never_raises(harness: _Harness) -> None:
    # Given a closed log / When records and garbage are submitted / Then nothing is raised
    log = harness.log()
    log.close()
    log.submit(_request("late"))
    log.submit([])
    assert harness.metric("dropped_total") == 4, "records after close are counted as dropped"
