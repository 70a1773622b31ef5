"""LogProcess and its writer process against nx-27017: every row once, even if the writer dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from telescore.core.schema import FEATURES
from telescore.io.prediction_store import PredictionStore
from telescore.services.processes import ServiceProcess, free_port
from telescore.serving.log_process import LogProcess, WriterStartError
from telescore.serving.log_writer import Entry, WriterConfig

pytestmark = pytest.mark.integration

WAIT = 30.0
"""Upper bound for any condition to become true; tests poll, they do not sleep for luck."""
ROW: dict[str, Any] = {
    "age": 41, "job": "admin.", "marital": "married", "education": "university.degree",
    "default": "no", "housing": "yes", "loan": "no", "contact": "cellular", "month": "may",
    "day_of_week": "mon", "campaign": 2, "pdays": 999, "previous": 0, "poutcome": "nonexistent",
    "emp.var.rate": -1.8, "cons.price.idx": 92.893, "cons.conf.idx": -46.2, "euribor3m": 1.299,
    "nr.employed": 5099.1,
}  # fmt: skip


def _entry(request_id: str, rows: int = 2) -> Entry:
    columns = [[ROW[name]] * rows for name in FEATURES]
    flags = [["euribor3m"]] + [[] for _ in range(rows - 1)]
    return (request_id, time.time(), 1.5, columns, [0.25] * rows, flags)


class _Setup:
    """Where one test's writer writes, and helpers to read it back."""

    def __init__(self, uri: str, tmp_path: Path) -> None:
        self.uri = uri
        self.database = f"test_{uuid.uuid4().hex[:12]}"
        self.spool_root = tmp_path / "spool"
        self.registry = CollectorRegistry()

    def config(self, uri: str | None = None) -> WriterConfig:
        return WriterConfig(
            mongodb_uri=uri or self.uri,
            database=self.database,
            spool_root=self.spool_root,
            model_name="telemarketing",
            model_version="7",
            route="challenger",
            close_timeout=2.0,
        )

    def sender(self, uri: str | None = None) -> LogProcess:
        return LogProcess(self.config(uri), registry=self.registry, max_restart_delay=0.5)

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(f"telescore_prediction_log_{name}") or 0.0

    def stored(self) -> list[dict[str, Any]]:
        with PredictionStore(self.uri, self.database) as store:
            return list(store.find())


@pytest.fixture
def setup(mongodb: ServiceProcess, tmp_path: Path) -> _Setup:
    return _Setup(mongodb.uri, tmp_path)  # type: ignore[attr-defined]


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_rows_become_documents_once_each(setup: _Setup) -> None:
    # Given a started sender
    async def scenario() -> None:
        log = setup.sender()
        await log.start()
        # When three requests of two rows are submitted and the sender closes
        for number in range(3):
            log.submit(_entry(f"req-{number}"))
        await _until(lambda: setup.metric("written_total") == 6, "six rows written")
        await log.close()
        assert log.pending == 0, "nothing is left in memory"

    _run(scenario)

    # Then each row is one document, as the prediction log defines it
    stored = {document["_id"]: document for document in setup.stored()}
    assert sorted(stored) == [f"req-{n}:{row}" for n in range(3) for row in range(2)]
    first = stored["req-0:0"]
    assert first["features"] == ROW, "the inputs are stored as sent"
    assert first["model_version"] == "7"
    assert first["route"] == "challenger"
    assert first["score"] == 0.25
    assert first["out_of_range"] == ["euribor3m"], "the flags follow their row"
    assert stored["req-0:1"]["out_of_range"] == []
    assert abs(first["timestamp"].timestamp() - time.time()) < 60, "a UTC timestamp of now"
    assert setup.metric("pending") == 0
    assert setup.metric("dropped_total") == 0


def test_killed_writer_is_restarted_and_nothing_is_lost(setup: _Setup) -> None:
    submitted: list[str] = []

    # Given a sender under continuous traffic
    async def scenario() -> None:
        log = setup.sender()
        await log.start()
        number = 0

        async def traffic(until: Callable[[], bool]) -> None:
            nonlocal number
            while not until():
                log.submit(_entry(f"req-{number}"))
                submitted.extend([f"req-{number}:0", f"req-{number}:1"])
                number += 1
                await asyncio.sleep(0.002)

        await traffic(lambda: setup.metric("written_total") >= 200)
        # When its writer process is killed mid-traffic
        assert log._child is not None  # noqa: SLF001 - the test kills the process it runs
        first_pid = log._child.pid  # noqa: SLF001
        os.kill(first_pid, signal.SIGKILL)
        sent_at_kill = len(submitted)
        await traffic(lambda: log.restarts >= 1 and len(submitted) >= sent_at_kill + 400)
        await traffic(lambda: setup.metric("written_total") >= len(submitted) - 200)
        await log.close()
        # Then a new writer took over
        assert log.restarts == 1, "the killed writer was restarted once"
        assert log._child is not None  # noqa: SLF001
        assert log._child.pid != first_pid, "a new process"  # noqa: SLF001

    _run(scenario)

    # And every row submitted is stored exactly once
    stored = [document["_id"] for document in setup.stored()]
    assert len(stored) == len(set(stored)), "MongoDB refuses a repeated _id"
    assert set(stored) == set(submitted), f"{len(submitted)} submitted, {len(stored)} stored"
    assert setup.metric("dropped_total") == 0, "nothing was dropped"
    assert setup.metric("pending") == 0


def test_close_while_mongodb_is_down_spools_for_the_next_writer(setup: _Setup) -> None:
    # Given a sender whose MongoDB does not answer
    unreachable = f"mongodb://127.0.0.1:{free_port()}"

    async def first_run() -> None:
        log = setup.sender(unreachable)
        await log.start()
        for number in range(5):
            log.submit(_entry(f"req-{number}"))
        # When it closes
        await log.close()
        assert log.dropped == 0, "the rows are spooled, not dropped"

    _run(first_run)
    assert setup.stored() == [], "nothing reached the database yet"

    # Then the next writer on the same spool folder, with MongoDB back, writes all ten rows
    async def second_run() -> None:
        log = setup.sender()
        await log.start()
        await _until(lambda: len(setup.stored()) == 10, "the spool replayed")
        await log.close()

    _run(second_run)
    assert len(setup.stored()) == 10


def test_a_writer_that_cannot_start_fails_start_with_the_reason(
    setup: _Setup, tmp_path: Path
) -> None:
    # Given a spool root that is a file, not a folder
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = setup.config().model_copy(update={"spool_root": blocker})

    # When the sender starts, then it fails naming the problem
    async def scenario() -> None:
        with pytest.raises(WriterStartError, match="did not start"):
            await LogProcess(config, registry=setup.registry).start()

    _run(scenario)
