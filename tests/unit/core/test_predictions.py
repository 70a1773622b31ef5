"""Prediction records: one document per row, deterministic ids, UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from telescore.core import predictions
from telescore.core.predictions import prediction_id, prediction_records

WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _records(**overrides: Any) -> list[dict[str, Any]]:
    arguments: dict[str, Any] = {
        "request_id": "req-1",
        "model_name": "telemarketing",
        "model_version": 3,
        "route": "champion",
        "rows": [{"age": 41, "job": "admin."}, {"age": 150, "job": "retired"}],
        "scores": [0.25, 0.75],
        "latency_ms": 12.5,
        "out_of_range": [[], ["age"]],
        "timestamp": WHEN,
    }
    arguments.update(overrides)
    return prediction_records(**arguments)


def test_one_document_per_row_with_every_field() -> None:
    # Given a request of two rows / When records are built
    records = _records()

    # Then there is one document per row, with exactly the documented fields
    assert len(records) == 2, "one document per scored row"
    for record in records:
        assert tuple(record) == predictions.FIELDS, f"fields differ: {sorted(record)}"
    first, second = records
    assert first[predictions.ID] == "req-1:0", "the id is <request_id>:<row>"
    assert second[predictions.ID] == prediction_id("req-1", 1), "prediction_id agrees with records"
    assert second[predictions.ROW] == 1, "the row index is kept"
    assert first[predictions.MODEL_VERSION] == "3", "the model version is stored as a string"
    assert first[predictions.ROUTE] == "champion", "the route is kept"
    assert second[predictions.FEATURES] == {"age": 150, "job": "retired"}, "features as sent"
    assert second[predictions.SCORE] == 0.75, "each row keeps its own score"
    assert first[predictions.LATENCY_MS] == 12.5, "the request latency is on every row"
    assert second[predictions.OUT_OF_RANGE] == ["age"], "each row keeps its own range flags"


def test_ids_are_deterministic_so_a_replay_is_idempotent() -> None:
    # Given the same request built twice / When ids are compared
    first, again = _records(), _records()

    # Then they are identical
    assert [r["_id"] for r in first] == [r["_id"] for r in again], "ids must not be random"


def test_timestamp_is_converted_to_utc() -> None:
    # Given a timestamp in UTC+2 / When records are built
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    record = _records(timestamp=local)[0]

    # Then the stored timestamp is the same instant, in UTC
    assert record[predictions.TIMESTAMP] == WHEN, "same instant"
    assert record[predictions.TIMESTAMP].utcoffset() == timedelta(0), "expressed in UTC"


def test_naive_timestamp_is_refused() -> None:
    # Given a naive timestamp / When records are built / Then it is refused, not guessed
    with pytest.raises(ValueError, match="timezone-aware"):
        _records(timestamp=datetime(2024, 1, 1))  # noqa: DTZ001


def test_numpy_values_become_plain_python() -> None:
    # Given features and a score as NumPy scalars (as decoded from a V2 request)
    records = _records(
        rows=[{"age": np.int64(41), "euribor3m": np.float64(4.5), "job": "admin."}],
        scores=[np.float32(0.5)],
        out_of_range=[[]],
    )

    # Then the stored values are plain int / float, which BSON and JSON can encode
    features = records[0][predictions.FEATURES]
    assert type(features["age"]) is int, "numpy.int64 must become int"
    assert type(features["euribor3m"]) is float, "numpy.float64 must become float"
    assert type(records[0][predictions.SCORE]) is float, "score must be a float"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scores": [0.1]}, "one entry per row"),
        ({"out_of_range": [[]]}, "one entry per row"),
        ({"route": "canary"}, "route must be one of"),
    ],
)
def test_inconsistent_inputs_are_refused(overrides: dict[str, Any], message: str) -> None:
    # Given inputs that do not describe one request / When records are built / Then it fails
    with pytest.raises(ValueError, match=message):
        _records(**overrides)


def test_empty_request_gives_no_records() -> None:
    # Given a request with no rows / When records are built / Then there are none
    assert _records(rows=[], scores=[], out_of_range=[]) == [], "no rows, no documents"
