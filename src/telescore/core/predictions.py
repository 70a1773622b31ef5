"""Prediction records: one document per scored row, as logged to the `predictions` collection.

MLServer journals each scored request as one entry (`JournalEntry`, JSON) before it answers;
the shipper turns the entry into one document per row (`prediction_records`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, NamedTuple, get_args

import orjson

Route = Literal["champion", "challenger", "shadow"]
"""Which deployment slot answered (or, for `shadow`, scored without answering)."""

ROUTES: Final[tuple[str, ...]] = get_args(Route)
UNSERVED: Final = "unserved"
"""The route of a call made while no model served (cold start): logged with its inputs and no
score, so that its outcome can be recorded and the row learnt by the first model. No model's
evidence: the monitor and the release judge only what a model answered."""

ID: Final = "_id"
"""The prediction id the server gave the row (a UUIDv7, see `core.prediction_ids`)."""
REQUEST_ID: Final = "request_id"
"""The V2 request `id`, as the client sent it (or as the server generated it): not unique."""
ROW: Final = "row"
"""Index of the row within its request, from 0."""
TIMESTAMP: Final = "timestamp"
"""When the request was scored (UTC)."""
MODEL_NAME: Final = "model_name"
MODEL_VERSION: Final = "model_version"
"""Registry version, always a string."""
ROUTE: Final = "route"
FEATURES: Final = "features"
"""The inputs exactly as sent, before any preprocessing."""
SCORE: Final = "score"
"""Probability of the positive class."""
LATENCY_MS: Final = "latency_ms"
"""Time spent scoring the whole request, in milliseconds."""
OUT_OF_RANGE: Final = "out_of_range"
"""Names of the numeric inputs of this row outside the range the model was trained on."""

FIELDS: Final = (
    ID, REQUEST_ID, ROW, TIMESTAMP, MODEL_NAME, MODEL_VERSION, ROUTE,
    FEATURES, SCORE, LATENCY_MS, OUT_OF_RANGE,
)  # fmt: skip


class JournalEntry(NamedTuple):
    """One scored request as MLServer journals it; the model is in the segment's metadata."""

    prediction_ids: list[str]
    request_id: str
    epoch: float
    """UTC seconds since the epoch when the request was scored."""
    latency_ms: float
    columns: list[list[Any]]
    """The feature values, one list per feature in `schema.FEATURES` order, one value per row."""
    scores: list[float]
    out_of_range: list[list[str]]


class ServedModel(NamedTuple):
    """Which model a journal segment's entries were scored by."""

    model_name: str
    model_version: str
    route: Route


def utc_time(timestamp: datetime) -> datetime:
    """Return `timestamp` in UTC; a naive time is refused.

    A naive time could be local or UTC: refuse to guess, a wrong hour would skew monitoring.
    """
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    return timestamp.astimezone(UTC)


def entry_payload(entry: JournalEntry) -> bytes:
    """Encode an entry for the journal (compact JSON)."""
    # A tuple: orjson takes tuples, not their subclasses. NumPy scalars (from in-process
    # callers) are encoded as the numbers they hold.
    return orjson.dumps(tuple(entry), option=orjson.OPT_SERIALIZE_NUMPY)


def read_entry(payload: bytes) -> JournalEntry:
    """Decode an entry; raise ValueError if the payload is not one."""
    try:
        fields = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not a journal entry: {error}") from None
    if type(fields) is not list or len(fields) != len(JournalEntry._fields):
        raise ValueError(f"not a journal entry: not an array of {len(JournalEntry._fields)} fields")
    entry = JournalEntry(*fields)
    lists = (entry.prediction_ids, entry.columns, entry.scores, entry.out_of_range)
    if not all(type(each) is list for each in lists) or not all(
        type(column) is list for column in entry.columns
    ):
        raise ValueError("not a journal entry: ids, columns, scores and flags must be lists")
    rows = len(entry.prediction_ids)
    if not (len(entry.scores) == len(entry.out_of_range) == rows) or any(
        len(column) != rows for column in entry.columns
    ):
        raise ValueError("a journal entry must hold one id, score, flag list and value per row")
    return entry


def entry_records(
    entry: JournalEntry, model: ServedModel, feature_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Build the prediction documents of one journaled request."""
    if len(entry.columns) != len(feature_names):
        raise ValueError(f"{len(entry.columns)} feature columns for {len(feature_names)} names")
    rows = [
        dict(zip(feature_names, values, strict=True)) for values in zip(*entry.columns, strict=True)
    ]
    return prediction_records(
        prediction_ids=entry.prediction_ids,
        request_id=entry.request_id,
        model=model,
        rows=rows,
        scores=entry.scores,
        latency_ms=entry.latency_ms,
        out_of_range=entry.out_of_range,
        timestamp=datetime.fromtimestamp(entry.epoch, UTC),
    )


def prediction_records(
    prediction_ids: Sequence[str],
    request_id: str,
    model: ServedModel,
    rows: Sequence[Mapping[str, Any]],
    scores: Sequence[float],
    latency_ms: float,
    out_of_range: Sequence[Sequence[str]],
    timestamp: datetime,
) -> list[dict[str, Any]]:
    """Build one prediction document per scored row of a request."""
    if not len(prediction_ids) == len(rows) == len(scores) == len(out_of_range):
        raise ValueError(
            f"prediction ids ({len(prediction_ids)}), rows ({len(rows)}), scores "
            f"({len(scores)}) and out_of_range ({len(out_of_range)}) must have one entry per row"
        )
    if model.route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, not {model.route!r}")
    when = utc_time(timestamp)
    return [
        {
            ID: prediction_id,
            REQUEST_ID: request_id,
            ROW: index,
            TIMESTAMP: when,
            MODEL_NAME: model.model_name,
            MODEL_VERSION: str(model.model_version),
            ROUTE: model.route,
            FEATURES: dict(row),
            SCORE: float(score),
            LATENCY_MS: float(latency_ms),
            OUT_OF_RANGE: [str(name) for name in names],
        }
        for index, (prediction_id, row, score, names) in enumerate(
            zip(prediction_ids, rows, scores, out_of_range, strict=True)
        )
    ]


def unserved_records(
    prediction_ids: Sequence[str],
    request_id: str,
    model_name: str,
    rows: Sequence[Mapping[str, Any]],
    timestamp: datetime,
) -> list[dict[str, Any]]:
    """Build one document per row of a request no model could score (route `unserved`).

    The fields of a scored row, with no version, no score and no latency: its outcome joins it
    like any other, so the row becomes a labelled training row.
    """
    if len(prediction_ids) != len(rows):
        raise ValueError(f"{len(prediction_ids)} prediction ids for {len(rows)} rows")
    when = utc_time(timestamp)
    return [
        {
            ID: prediction_id,
            REQUEST_ID: request_id,
            ROW: index,
            TIMESTAMP: when,
            MODEL_NAME: model_name,
            MODEL_VERSION: "",
            ROUTE: UNSERVED,
            FEATURES: dict(row),
            SCORE: None,
            LATENCY_MS: None,
            OUT_OF_RANGE: [],
        }
        for index, (prediction_id, row) in enumerate(zip(prediction_ids, rows, strict=True))
    ]
