"""Prediction records and journal entries: one document per row, server ids, UTC timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest

from telescore.core import predictions
from telescore.core.predictions import (
    JournalEntry,
    ServedModel,
    entry_payload,
    entry_records,
    prediction_records,
    read_entry,
)

WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
IDS = ["018f4c3a-5b2d-7000-8abc-def012300000", "018f4c3a-5b2d-7000-8abc-def012300001"]
MODEL = ServedModel(model_name="telemarketing", model_version="3", route="champion")


def _records(**overrides: Any) -> list[dict[str, Any]]:
    arguments: dict[str, Any] = {
        "prediction_ids": IDS,
        "request_id": "client-42",
        "model": MODEL,
        "rows": [{"age": 41, "job": "admin."}, {"age": 150, "job": "retired"}],
        "scores": [0.25, 0.75],
        "latency_ms": 12.5,
        "out_of_range": [[], ["age"]],
        "timestamp": WHEN,
    }
    arguments.update(overrides)
    return prediction_records(**arguments)


def _entry(**overrides: Any) -> JournalEntry:
    fields: dict[str, Any] = {
        "prediction_ids": list(IDS),
        "request_id": "client-42 «Zürich»",
        "epoch": WHEN.timestamp(),
        "latency_ms": 3.25,
        "columns": [[41, 52], ["admin.", "retired"], [1.299, -0.5]],
        "scores": [0.25, 0.75],
        "out_of_range": [[], ["age", "euribor3m"]],
    }
    fields.update(overrides)
    return JournalEntry(**fields)


def test_one_document_per_row_with_exactly_the_fields_in_order() -> None:
    # Given a request of two rows / When records are built
    records = _records()

    # Then there is one document per row, with exactly the documented fields, in order
    assert len(records) == 2, "one document per scored row"
    for record in records:
        assert tuple(record) == predictions.FIELDS, f"fields differ: {list(record)}"
    first, second = records
    assert [first["_id"], second["_id"]] == IDS, "each row's _id must be its prediction id"
    assert first[predictions.REQUEST_ID] == "client-42", "request_id is the client's id"
    assert second[predictions.REQUEST_ID] == "client-42", "every row carries the request id"
    assert (first[predictions.ROW], second[predictions.ROW]) == (0, 1), "row index in the request"
    assert first[predictions.TIMESTAMP] == WHEN, "the request's timestamp is on every row"
    assert first[predictions.MODEL_NAME] == "telemarketing", "model name"
    assert first[predictions.MODEL_VERSION] == "3", "model version"
    assert first[predictions.ROUTE] == "champion", "the route is kept"
    assert second[predictions.FEATURES] == {"age": 150, "job": "retired"}, "features as sent"
    assert (first[predictions.SCORE], second[predictions.SCORE]) == (0.25, 0.75), "own scores"
    assert second[predictions.LATENCY_MS] == 12.5, "the request latency is on every row"
    assert first[predictions.OUT_OF_RANGE] == [], "a row in range has no flags"
    assert second[predictions.OUT_OF_RANGE] == ["age"], "each row keeps its own range flags"


def test_ids_come_from_the_server_not_from_the_client_id() -> None:
    # Given two requests sent with the same client id, given different prediction ids
    first = _records(request_id="same")
    other_ids = ["018f4c3a-5b2d-7001-8abc-def012300000", "018f4c3a-5b2d-7001-8abc-def012300001"]
    second = _records(request_id="same", prediction_ids=other_ids)

    # Then their documents do not collide: the client id is kept, but is not the key
    keys = [record["_id"] for record in first + second]
    assert keys == IDS + other_ids, f"documents must be keyed by prediction id: {keys}"
    assert {record[predictions.REQUEST_ID] for record in first + second} == {"same"}, "client id"


def test_model_version_is_stored_as_a_string() -> None:
    # Given a model version that came through as a number (as registries sometimes give it)
    model = ServedModel("telemarketing", 7, "challenger")  # type: ignore[arg-type]

    # When records are built
    record = _records(model=model)[0]

    # Then the version is the string "7", so that queries on it match every document
    assert record[predictions.MODEL_VERSION] == "7", "the version must be stored as a string"
    assert record[predictions.ROUTE] == "challenger", "the route comes from the model"


def test_scores_and_latency_are_stored_as_floats() -> None:
    # Given a score and a latency that are whole numbers (as JSON may decode them)
    record = _records(scores=[1, 0], latency_ms=4)[0]

    # Then both are stored as floats, so that one field never holds two BSON types
    assert type(record[predictions.SCORE]) is float, "score must be stored as a float"
    assert type(record[predictions.LATENCY_MS]) is float, "latency must be stored as a float"


def test_timestamp_is_stored_in_utc() -> None:
    # Given a timestamp in UTC+2 / When records are built
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    record = _records(timestamp=local)[0]

    # Then the stored timestamp is the same instant, expressed in UTC
    assert record[predictions.TIMESTAMP] == WHEN, "the instant must not change"
    assert record[predictions.TIMESTAMP].utcoffset() == timedelta(0), "stored in UTC"
    assert record[predictions.TIMESTAMP].hour == 7, "the UTC hour, not the local one"


class _NoOffset(tzinfo):
    """A tzinfo that does not know its offset: as naive as no tzinfo at all."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    "timestamp",
    [datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=_NoOffset())],  # noqa: DTZ001
    ids=["naive", "tzinfo without offset"],
)
def test_timestamps_without_an_offset_are_refused(timestamp: datetime) -> None:
    # Given a timestamp that could be local or UTC / When records are built / Then it is refused
    with pytest.raises(ValueError, match="timezone-aware"):
        _records(timestamp=timestamp)


@pytest.mark.parametrize(
    "overrides",
    [
        {"prediction_ids": IDS[:1]},
        {"prediction_ids": [*IDS, "018f4c3a-5b2d-7000-8abc-def012300002"]},
        {"rows": [{"age": 41}]},
        {"scores": [0.1]},
        {"out_of_range": [[]]},
    ],
    ids=["fewer ids", "more ids", "fewer rows", "fewer scores", "fewer flag lists"],
)
def test_lengths_that_disagree_are_refused(overrides: dict[str, Any]) -> None:
    # Given inputs that do not have one entry per row / When records are built / Then it fails
    with pytest.raises(ValueError, match="one entry per row"):
        _records(**overrides)


def test_an_unknown_route_is_refused() -> None:
    # Given a model served on a route that does not exist / When records are built / Then it fails
    model = ServedModel("telemarketing", "3", "canary")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="route must be one of"):
        _records(model=model)


def test_empty_request_gives_no_records() -> None:
    # Given a request with no rows / When records are built / Then there are none
    records = _records(prediction_ids=[], rows=[], scores=[], out_of_range=[])
    assert records == [], "no rows, no documents"


def test_an_entry_survives_the_journal_as_json() -> None:
    # Given an entry with non-ASCII text, floats and nested flags
    entry = _entry()

    # When it is encoded for the journal and read back
    payload = entry_payload(entry)
    again = read_entry(payload)

    # Then it is the same entry, and the payload is plain JSON with the fields in order
    assert again == entry, f"round trip changed the entry: {again}"
    assert isinstance(again, JournalEntry), "read_entry must return a JournalEntry"
    assert json.loads(payload) == list(entry), "the payload must be a JSON array of the fields"


def test_entry_records_builds_one_document_per_row_from_columns() -> None:
    # Given a journaled entry and the names of its feature columns
    entry = read_entry(entry_payload(_entry()))
    names = ["age", "job", "euribor3m"]

    # When its documents are built
    records = entry_records(entry, MODEL, names)

    # Then each row's features are taken across the columns, with the entry's other fields
    assert [record["_id"] for record in records] == IDS, "ids from the entry, in row order"
    assert records[0][predictions.FEATURES] == {"age": 41, "job": "admin.", "euribor3m": 1.299}, (
        "the first row's features"
    )
    assert records[1][predictions.FEATURES] == {"age": 52, "job": "retired", "euribor3m": -0.5}, (
        "the second row's features"
    )
    assert records[1][predictions.REQUEST_ID] == "client-42 «Zürich»", "client id from the entry"
    assert records[1][predictions.OUT_OF_RANGE] == ["age", "euribor3m"], "flags from the entry"
    assert records[0][predictions.LATENCY_MS] == 3.25, "latency from the entry"
    assert records[0][predictions.TIMESTAMP] == WHEN, "the entry's epoch, as a UTC datetime"
    assert records[0][predictions.TIMESTAMP].utcoffset() == timedelta(0), "timestamp in UTC"
    assert records[0][predictions.MODEL_VERSION] == "3", "the model comes from the segment"
    assert all(tuple(record) == predictions.FIELDS for record in records), "same fields as always"


def test_entry_records_refuses_names_that_do_not_match_the_columns() -> None:
    # Given an entry with three columns / When built with two names / Then it is refused
    with pytest.raises(ValueError, match="3 feature columns for 2 names"):
        entry_records(_entry(), MODEL, ["age", "job"])


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\xff\xfe garbage", b"TJ\x00\x00", b'["unterminated', b"[1, 2,]"],
    ids=["empty", "binary", "frame bytes", "truncated JSON", "invalid JSON"],
)
def test_read_entry_refuses_bytes_that_are_not_json(payload: bytes) -> None:
    # Given bytes that are not JSON / When read as an entry / Then it is refused as a ValueError
    with pytest.raises(ValueError, match="not a journal entry"):
        read_entry(payload)


@pytest.mark.parametrize("count", [0, 6, 8])
def test_read_entry_refuses_a_wrong_number_of_fields(count: int) -> None:
    # Given a JSON array with too few or too many fields
    fields = [*list(_entry()), None][:count]

    # When read as an entry / Then it is refused
    with pytest.raises(ValueError, match="not a journal entry"):
        read_entry(json.dumps(fields).encode())


@pytest.mark.parametrize(
    "overrides",
    [
        {"prediction_ids": IDS[:1]},
        {"scores": [0.5]},
        {"out_of_range": [[], [], []]},
        {"columns": [[41, 52], ["admin."], [1.299, -0.5]]},
    ],
    ids=["fewer ids", "fewer scores", "more flag lists", "a short column"],
)
def test_read_entry_refuses_rows_that_do_not_line_up(overrides: dict[str, Any]) -> None:
    # Given an entry whose per-row lists have different lengths
    payload = entry_payload(_entry(**overrides))

    # When read back / Then it is refused before any document is built
    with pytest.raises(ValueError, match="one id, score, flag list and value per row"):
        read_entry(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b'"seven!!"',
        b'{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7}',
        b'[1, "client", 0.0, 1.0, [], [], []]',
        b'[[], "client", 0.0, 1.0, null, [], []]',
    ],
    ids=["7-character string", "7-key object", "number for ids", "null for columns"],
)
def test_read_entry_refuses_json_of_the_wrong_shape(payload: bytes) -> None:
    # Given JSON that is not a seven-field array of lists
    # When read as an entry / Then it is refused as a ValueError, as read_entry promises
    try:
        entry = read_entry(payload)
    except ValueError:
        return
    raise AssertionError(f"read_entry accepted {payload!r} as {entry}")


def test_a_call_no_model_served_is_logged_with_its_inputs_and_no_score() -> None:
    # given two calls made while no model served
    rows = [{"age": 41, "job": "admin."}, {"age": 30, "job": "services"}]
    # when they are logged
    documents = predictions.unserved_records(IDS, "replay", "telemarketing", rows, WHEN)
    # then each is a document of its own, route `unserved`, with its inputs and no score
    assert [each["_id"] for each in documents] == IDS, documents
    assert {each["route"] for each in documents} == {predictions.UNSERVED}, documents
    assert [each["features"] for each in documents] == rows, "the inputs, as sent"
    assert all(each["score"] is None and each["model_version"] == "" for each in documents)
    # and a naive time is refused, as for a scored row
    with pytest.raises(ValueError, match="timezone-aware"):
        predictions.unserved_records(
            IDS, "replay", "telemarketing", rows, WHEN.replace(tzinfo=None)
        )
