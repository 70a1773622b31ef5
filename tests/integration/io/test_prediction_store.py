"""PredictionStore against a real MongoDB wire-protocol server (nx-27017)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import PyMongoError

from telescore.core import predictions
from telescore.core.predictions import prediction_records
from telescore.io.prediction_store import PredictionStore, split_encodable
from telescore.services.processes import ServiceProcess

pytestmark = pytest.mark.integration

START = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)


@pytest.fixture
def store(mongodb: ServiceProcess) -> Iterator[PredictionStore]:
    """An open store on a database of its own."""
    with PredictionStore(mongodb.uri, f"test_{uuid.uuid4().hex[:12]}") as opened:  # type: ignore[attr-defined]
        yield opened


def _request(
    request_id: str, rows: int, *, version: str = "1", offset_s: int = 0
) -> list[dict[str, Any]]:
    return prediction_records(
        request_id=request_id,
        model_name="telemarketing",
        model_version=version,
        route="champion",
        rows=[{"age": 30 + i, "emp.var.rate": 1.1} for i in range(rows)],
        scores=[i / 10 for i in range(rows)],
        latency_ms=4.0,
        out_of_range=[[] for _ in range(rows)],
        timestamp=START + timedelta(seconds=offset_s),
    )


def test_insert_then_read_back(store: PredictionStore) -> None:
    # Given two requests from two model versions
    written = store.insert(_request("a", 3, version="1", offset_s=0))
    written += store.insert(_request("b", 2, version="2", offset_s=10))

    # When read back with a filter, a sort and a limit
    latest = store.find({predictions.MODEL_VERSION: "1"}, sort=[(predictions.ROW, -1)], limit=2)

    # Then everything is there, and documents come back as written with UTC timestamps
    assert written == 5, "insert returns how many records were stored"
    assert store.count() == 5, "one document per row"
    assert store.count({predictions.MODEL_VERSION: "2"}) == 2, "count honours the filter"
    assert [d["_id"] for d in latest] == ["a:2", "a:1"], "find honours sort and limit"
    assert latest[0][predictions.TIMESTAMP] == START, "the timestamp round-trips"
    assert latest[0][predictions.TIMESTAMP].tzinfo is not None, "timestamps come back aware"
    assert latest[0][predictions.FEATURES] == {"age": 32, "emp.var.rate": 1.1}, "features as sent"


def test_duplicates_count_as_written_and_the_rest_is_inserted(store: PredictionStore) -> None:
    # Given a request already stored
    first = _request("a", 3)
    store.insert(first)

    # When it is written again within a batch that also holds new records
    written = store.insert(first + _request("b", 2))

    # Then the repeats count as written, the new ones are inserted, and nothing is doubled
    assert written == 5, "a duplicate-key error means already written, not failed"
    assert store.count() == 5, "each record is stored exactly once"
    assert {d["_id"] for d in store.find()} == {"a:0", "a:1", "a:2", "b:0", "b:1"}, "ids"


def test_empty_insert_is_a_no_op(store: PredictionStore) -> None:
    # Given nothing to write / When inserted / Then nothing happens
    assert store.insert([]) == 0, "no records, nothing written"


def test_ensure_indexes_is_idempotent(store: PredictionStore) -> None:
    # Given indexes created twice
    store.ensure_indexes()
    store.ensure_indexes()

    # Then the collection has one index per monitored field (besides _id)
    keys = {tuple(index["key"])[0][0] for index in store.collection.index_information().values()}
    wanted = {predictions.TIMESTAMP, predictions.MODEL_VERSION, predictions.REQUEST_ID}
    assert wanted <= keys, f"missing indexes: {wanted - keys}"


def test_unencodable_records_are_singled_out() -> None:
    # Given a batch with one record BSON cannot hold (an integer over 64 bits)
    good = _request("a", 2)
    bad = {**_request("b", 1)[0], predictions.SCORE: 2**70}

    # When split / Then only that record is set aside
    encodable, unencodable = split_encodable([*good, bad])
    assert encodable == good, "encodable records are kept in order"
    assert unencodable == [bad], "the record that can never be stored is singled out"


def test_a_down_server_is_detected_quickly(mongodb: ServiceProcess, store: PredictionStore) -> None:
    # Given a store that has connected, and then a stopped server
    store.insert(_request("a", 1))
    mongodb.stop()
    try:
        # When writing twice (the second write cannot reuse a pooled connection)
        started = time.monotonic()
        for attempt in ("b", "c"):
            with pytest.raises(PyMongoError):
                store.insert(_request(attempt, 1))
        elapsed = time.monotonic() - started
    finally:
        mongodb.start()

    # Then both fail within a few seconds, not pymongo's default 30 s
    assert elapsed < 6, f"a down server took {elapsed:.1f} s to detect"
    # And the store works again once the server is back
    assert store.insert(_request("d", 1)) == 1, "the client reconnects by itself"
