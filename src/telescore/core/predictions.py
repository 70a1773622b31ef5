"""Prediction records: one document per scored row, as logged to the `predictions` collection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

Route = Literal["champion", "challenger", "shadow"]
"""Which deployment slot answered (or, for `shadow`, scored without answering)."""

ROUTES: Final[tuple[str, ...]] = get_args(Route)

ID: Final = "_id"
"""`<request_id>:<row>`: deterministic, so that writing a record again is a no-op."""
REQUEST_ID: Final = "request_id"
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
"""Names of the numeric inputs of this row outside their plausible range."""

FIELDS: Final = (
    ID, REQUEST_ID, ROW, TIMESTAMP, MODEL_NAME, MODEL_VERSION, ROUTE,
    FEATURES, SCORE, LATENCY_MS, OUT_OF_RANGE,
)  # fmt: skip


def prediction_id(request_id: str, row: int) -> str:
    """Return the document id of one row of one request."""
    return f"{request_id}:{row}"


def prediction_records(
    request_id: str,
    model_name: str,
    model_version: str | int,
    route: Route,
    rows: Sequence[Mapping[str, Any]],
    scores: Sequence[float],
    latency_ms: float,
    out_of_range: Sequence[Sequence[str]],
    timestamp: datetime,
) -> list[dict[str, Any]]:
    """Build one prediction document per scored row of a request."""
    if not len(rows) == len(scores) == len(out_of_range):
        raise ValueError(
            f"rows ({len(rows)}), scores ({len(scores)}) and out_of_range "
            f"({len(out_of_range)}) must have one entry per row"
        )
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, not {route!r}")
    # A naive time could be local or UTC: refuse to guess, a wrong hour would skew monitoring.
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    when = timestamp.astimezone(UTC)
    return [
        {
            ID: prediction_id(request_id, index),
            REQUEST_ID: request_id,
            ROW: index,
            TIMESTAMP: when,
            MODEL_NAME: model_name,
            MODEL_VERSION: str(model_version),
            ROUTE: route,
            FEATURES: {name: _plain(value) for name, value in row.items()},
            SCORE: float(score),
            LATENCY_MS: float(latency_ms),
            OUT_OF_RANGE: [str(name) for name in names],
        }
        for index, (row, score, names) in enumerate(zip(rows, scores, out_of_range, strict=True))
    ]


def _plain(value: Any) -> Any:
    """Turn a NumPy scalar into the Python value it holds; leave anything else as is."""
    # Rows decoded from a V2 request often hold numpy.int64 / float64, which neither BSON nor
    # JSON can encode; one such value would make the whole batch unwritable.
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    return value
