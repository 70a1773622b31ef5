"""PredictionStore against a real MongoDB wire-protocol server (nx-27017)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

from telescore.core import predictions
from telescore.core.predictions import ServedModel, prediction_records
from telescore.io.prediction_store import PredictionStore
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
        prediction_ids=[f"{request_id}-{row}" for row in range(rows)],
        request_id=request_id,
        model=ServedModel("telemarketing", version, "champion"),
        rows=[{"age": 30 + i, "emp.var.rate": 1.1} for i in range(rows)],
        scores=[i / 10 for i in range(rows)],
        latency_ms=4.0,
        out_of_range=[[] for _ in range(rows)],
        timestamp=START + timedelta(seconds=offset_s),
    )


def test_insert_then_read_back(store: PredictionStore) -> None:
    # Given two requests from two model versions
    first = store.insert(_request("a", 3, version="1", offset_s=0))
    second = store.insert(_request("b", 2, version="2", offset_s=10))

    # When read back with a filter, a sort and a limit
    latest = store.find({predictions.MODEL_VERSION: "1"}, sort=[(predictions.ROW, -1)], limit=2)

    # Then everything is there, and documents come back as written with UTC timestamps
    assert (first.stored, second.stored) == (3, 2), "insert says how many records are stored"
    assert first.refused == second.refused == (), "nothing was refused"
    assert store.count({predictions.MODEL_VERSION: "2"}) == 2, "count honours the filter"
    assert [d["_id"] for d in latest] == ["a-2", "a-1"], "find honours sort and limit"
    assert latest[0][predictions.TIMESTAMP] == START, "the timestamp round-trips"
    assert latest[0][predictions.TIMESTAMP].tzinfo is not None, "timestamps come back aware"
    assert latest[0][predictions.FEATURES] == {"age": 32, "emp.var.rate": 1.1}, "features as sent"


def test_records_stored_before_count_as_stored_and_the_rest_is_inserted(
    store: PredictionStore,
) -> None:
    # Given a request already stored (a re-sent batch after a lost acknowledgement)
    first = _request("a", 3)
    store.insert(first)

    # When it is written again within a batch that also holds new records
    outcome = store.insert(first + _request("b", 2))

    # Then the repeats count as stored, not refused, and the new ones are inserted
    assert outcome.stored == 5, "a repeated _id means stored by an earlier try"
    assert outcome.refused == (), "a repeated _id is not a refusal"
    assert store.count({predictions.REQUEST_ID: "b"}) == 2, "the new records are inserted"


def test_a_record_another_unique_index_refuses_is_reported_with_its_reason(
    store: PredictionStore,
) -> None:
    # Given an operator's unique index on the client id, and one request stored
    store.collection.create_index([(predictions.REQUEST_ID, 1)], unique=True, name="one_per_id")
    store.insert(_request("a", 1))

    # When another prediction with that client id comes, between two new ones
    clash = {**_request("b", 1)[0], predictions.ID: "other", predictions.REQUEST_ID: "a"}
    outcome = store.insert([*_request("c", 1), clash, *_request("d", 1)])

    # Then only that record is refused, named by its position, with MongoDB's reason
    assert [refused.index for refused in outcome.refused] == [1], outcome
    assert "11000" in outcome.refused[0].reason, "the reason carries MongoDB's error"
    assert outcome.stored == 2, "the records around it are stored"
    assert store.count({predictions.ID: "other"}) == 0, "the refused record is not stored"


def test_empty_insert_is_a_no_op(store: PredictionStore) -> None:
    # Given nothing to write / When inserted / Then nothing happens
    assert store.insert([]).stored == 0, "no records, nothing written"


def test_ensure_indexes_is_idempotent(store: PredictionStore) -> None:
    # Given indexes created twice
    store.ensure_indexes()
    store.ensure_indexes()

    # Then the collection has one index per monitored field (besides _id)
    keys = {tuple(index["key"])[0][0] for index in store.collection.index_information().values()}
    wanted = {predictions.TIMESTAMP, predictions.MODEL_VERSION, predictions.REQUEST_ID}
    assert wanted <= keys, f"missing indexes: {wanted - keys}"


def test_a_record_bson_cannot_encode_is_refused_and_the_rest_stored(
    store: PredictionStore,
) -> None:
    # Given a batch with one record BSON cannot hold (an integer over 64 bits)
    good = _request("a", 2)
    bad = {**_request("b", 1)[0], predictions.SCORE: 2**70}

    # When inserted
    outcome = store.insert([good[0], bad, good[1]])

    # Then only that record is refused, and the others are stored
    assert [refused.index for refused in outcome.refused] == [1], outcome
    assert "BSON" in outcome.refused[0].reason, outcome.refused[0].reason
    assert outcome.stored == 2, "the encodable records are stored"
    assert store.count({predictions.REQUEST_ID: "a"}) == 2, "both good records are in MongoDB"


def test_a_down_server_is_detected_quickly(mongodb: ServiceProcess, store: PredictionStore) -> None:
    # Given a store that has connected, and then a stopped server
    store.insert(_request("a", 1))
    client = store.collection.database.client
    selection_timeout = client.options.server_selection_timeout
    mongodb.stop()
    try:
        # When writing twice (the first write loses its pooled connection, so the second must
        # select a server again)
        with pytest.raises(PyMongoError):
            store.insert(_request("b", 1))
        with pytest.raises(ServerSelectionTimeoutError) as second:
            store.insert(_request("c", 1))
    finally:
        mongodb.start()

    # Then the store waits for a server only a second or two, not pymongo's default 30 s
    assert selection_timeout <= 2, (
        f"server selection waits {selection_timeout} s: the shipper would stall on a down server"
    )
    # And the second write gave up by that short timeout, not by some other error
    assert f"Timeout: {selection_timeout}s" in str(second.value), (
        f"the write did not fail by the store's server-selection timeout: {second.value}"
    )
    # And the store works again once the server is back
    assert store.insert(_request("d", 1)).stored == 1, "the client reconnects by itself"
