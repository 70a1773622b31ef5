"""Call outcomes: did the prospect subscribe? One per prediction, reported after the call.

A telemarketer reports an outcome for a prediction id (see `core.prediction_ids`), one at a
time or as a batch file (CSV or JSON); it is stored in the `outcomes` collection under that id,
so that it joins its prediction by `_id`. An outcome may come hours or days after the
prediction, or never.

MLServer answers before its prediction reaches MongoDB (the shipper may defer up to
`ship_max_defer`, longer while MongoDB is down), so an outcome may come first. It is then
stored all the same, marked `pending`, and joins its prediction by itself once that is logged.
A pending outcome waits for as long as `PENDING_EXPIRY` (or the configured expiry) from the
time its prediction id was issued; then it is kept aside as expired (`plan_sweep`). An outcome
for an id issued further from now than the expiry, whose prediction is not logged, is refused
at once: no prediction can still come for it (`expiry_reason`).

Pure logic: the outcome models, their documents, the pending-outcome policy, and the parsing of
batch files into valid outcomes and rejected rows (each with its line and the reason).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import pandas as pd
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)

from telescore.core.json_array import MalformedArrayError, array_elements
from telescore.core.prediction_ids import is_prediction_id, issued_at
from telescore.core.predictions import FEATURES as FEATURES_FIELD
from telescore.core.predictions import TIMESTAMP
from telescore.core.schema import FEATURES, TARGET

# Fields of an outcome document in the `outcomes` collection.
ID: Final = "_id"
"""The prediction id the outcome is for: one outcome per prediction."""
SUBSCRIBED: Final = "subscribed"
"""Did the prospect subscribe (the label)."""
REPORTED_AT: Final = "reported_at"
"""When the telemarketer reported it (UTC, millisecond precision)."""
RECORDED_AT: Final = "recorded_at"
"""When it was stored (UTC, millisecond precision)."""
SOURCE: Final = "source"
"""Who or what reported it (a team, a CRM export, a file): free text, may be None."""
PENDING: Final = "pending"
"""True while its prediction is not known to be logged; absent once it is (or if it was)."""
JOINED_AT: Final = "joined_at"
"""When a pending outcome's prediction was found logged (absent if it was logged at once)."""
DOCUMENT_FIELDS: Final = (ID, SUBSCRIBED, REPORTED_AT, RECORDED_AT, SOURCE)
# Fields an outcome kept aside as expired (`outcomes_expired`) has besides its own.
EXPIRED_AT: Final = "expired_at"
"""When it was kept aside."""
REASON: Final = "reason"
"""Why it was kept aside."""

PENDING_EXPIRY: Final = timedelta(hours=24)
"""How long, from the time its prediction id was issued, an outcome waits for its prediction.

Far longer than any shipping delay (`ship_max_defer` is 30 s; rows wait in the journal while
MongoDB is down, and ship when it is back): a prediction still not logged after a day will not
be. Configurable: `TELESCORE_MONGODB_PENDING_OUTCOME_HOURS`."""

PREDICTION_ID: Final = "prediction_id"
"""How requests and batch files name the prediction id."""
COLUMNS: Final = (PREDICTION_ID, SUBSCRIBED, REPORTED_AT, SOURCE)
"""Columns (CSV) or keys (JSON) a batch row may have; others are ignored."""
REQUIRED_COLUMNS: Final = (PREDICTION_ID, SUBSCRIBED)
MAX_SOURCE_LENGTH: Final = 200

TRUE_WORDS: Final = frozenset({"yes", "true", "1"})
FALSE_WORDS: Final = frozenset({"no", "false", "0"})
_DELIMITERS: Final = ",;\t"
_SHOWN_CHARACTERS: Final = 60


def _canonical_id(value: object) -> object:
    # UUIDs are case-insensitive and pasted ids carry stray spaces: store the canonical form.
    return value.strip().lower() if isinstance(value, str) else value


def _check_id(value: str) -> str:
    if not is_prediction_id(value):
        raise ValueError(
            f"not a prediction id (a UUIDv7 as the server gave it): {value[:_SHOWN_CHARACTERS]!r}"
        )
    return value


def _read_subscribed(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    shown = value[:_SHOWN_CHARACTERS] if isinstance(value, str) else value
    raise ValueError(f"expected yes/no, true/false or 1/0, not {shown!r}")


def _utc_milliseconds(value: datetime) -> datetime:
    # MongoDB keeps milliseconds: cut here so that what is answered is what is stored.
    try:
        when = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+23:59 is valid, and before year 1 in UTC
        raise ValueError("out of range once converted to UTC") from None
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def _empty_to_none(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def utc_now() -> datetime:
    """Return the current time in UTC, to the millisecond (as MongoDB stores it)."""
    return _utc_milliseconds(datetime.now(UTC))


PredictionId = Annotated[
    str,
    BeforeValidator(_canonical_id),
    AfterValidator(_check_id),
    # Documented in the OpenAPI schema too (the check above is what decides).
    WithJsonSchema({"type": "string", "format": "uuid", "description": "a UUIDv7 prediction id"}),
]
"""A prediction id in canonical form: a lower-case UUIDv7 (surrounding spaces removed)."""
Subscribed = Annotated[bool, BeforeValidator(_read_subscribed)]
"""A yes/no answer: a boolean, 1/0, or the words yes/no, true/false, 1/0 (any case)."""
UtcTime = Annotated[AwareDatetime, AfterValidator(_utc_milliseconds)]
"""A timezone-aware time, kept in UTC to the millisecond; a naive time is refused."""
Source = Annotated[
    Annotated[str, Field(max_length=MAX_SOURCE_LENGTH)] | None, BeforeValidator(_empty_to_none)
]
"""Free text naming who or what reported; blank means None."""


class Outcome(BaseModel):
    """One call outcome as reported: did the prospect of this prediction subscribe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prediction_id: PredictionId
    """The prediction the call was about."""
    subscribed: Subscribed
    """Whether the prospect subscribed."""
    reported_at: UtcTime = Field(default_factory=utc_now)
    """When the outcome was reported; now when not given."""
    source: Source = None
    """Who or what reported it."""


class RecordedOutcome(Outcome):
    """An outcome as stored: the first one reported for its prediction."""

    recorded_at: UtcTime
    """When it was stored."""
    pending: bool = False
    """Its prediction is not logged yet: it joins it once it is, or expires."""


def outcome_document(
    outcome: Outcome, recorded_at: datetime, *, pending: bool = False
) -> dict[str, Any]:
    """Build the `outcomes` document of an outcome stored at `recorded_at` (pending or not)."""
    document = {
        ID: outcome.prediction_id,
        SUBSCRIBED: outcome.subscribed,
        REPORTED_AT: outcome.reported_at,
        RECORDED_AT: _utc_milliseconds(recorded_at),
        SOURCE: outcome.source,
    }
    if pending:  # only then: outcomes of logged predictions have the documents they always had
        document[PENDING] = True
    return document


def read_outcome_document(document: Mapping[str, Any]) -> RecordedOutcome:
    """Turn an `outcomes` document back into the outcome it stores."""
    return RecordedOutcome(
        prediction_id=document[ID],
        subscribed=document[SUBSCRIBED],
        reported_at=document[REPORTED_AT],
        recorded_at=document[RECORDED_AT],
        source=document.get(SOURCE),
        pending=document.get(PENDING) is True,
    )


# --- pending outcomes --------------------------------------------------------------------------


def expiry_reason(
    prediction_id: str, now: datetime, expiry: timedelta = PENDING_EXPIRY
) -> str | None:
    """Say why an outcome whose prediction is not logged can no longer wait for it; None if it can.

    It can while its prediction id was issued within `expiry` of `now`, either way: the clocks
    of the servers issuing ids may be a little ahead. Further back, the prediction would be
    logged by now; further ahead, no server issued the id yet.
    """
    issued = issued_at(prediction_id)
    hours = f"{expiry.total_seconds() / 3600:g} h"
    if issued < now - expiry:
        return (
            f"expired: prediction {prediction_id} was issued at {issued.isoformat()}, more than "
            f"{hours} ago, and is not logged: it will not be"
        )
    if issued > now + expiry:
        return (
            f"expired: prediction id {prediction_id} says it was issued at {issued.isoformat()}, "
            f"more than {hours} from now: no server issued it"
        )
    return None


@dataclass(frozen=True)
class SweepPlan:
    """What to do with pending outcomes: confirm those joined, keep aside those expired."""

    confirm: tuple[str, ...]
    """Prediction ids now logged: their outcomes are no longer pending."""
    expire: tuple[tuple[str, str], ...]
    """(prediction id, reason) of the outcomes that waited too long: kept aside."""
    keep: tuple[str, ...]
    """Prediction ids still awaited."""


def plan_sweep(
    pending: Iterable[str],
    logged: Collection[str],
    now: datetime,
    expiry: timedelta = PENDING_EXPIRY,
) -> SweepPlan:
    """Decide, for each pending outcome's prediction id, whether it joined, expired or waits."""
    confirm: list[str] = []
    expire: list[tuple[str, str]] = []
    keep: list[str] = []
    for prediction_id in pending:
        if prediction_id in logged:
            confirm.append(prediction_id)
        elif (reason := expiry_reason(prediction_id, now, expiry)) is not None:
            expire.append((prediction_id, reason))
        else:
            keep.append(prediction_id)
    return SweepPlan(tuple(confirm), tuple(expire), tuple(keep))


def labelled_frame(predictions: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build training rows from predictions joined to their outcomes; unlabelled ones are left out.

    Columns: `prediction_id`, `timestamp`, the model inputs in schema order, and the label
    `y` as "yes"/"no" as in the dataset (so `features.split_features_label` takes it as is).
    """
    rows = [
        {
            PREDICTION_ID: prediction[ID],
            TIMESTAMP: prediction[TIMESTAMP],
            **prediction[FEATURES_FIELD],
            TARGET: "yes" if prediction[SUBSCRIBED] else "no",
        }
        for prediction in predictions
        if prediction.get(SUBSCRIBED) is not None
    ]
    frame = pd.DataFrame(rows, columns=[PREDICTION_ID, TIMESTAMP, *FEATURES, TARGET])
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


# --- batch files -------------------------------------------------------------------------------


class MalformedBatchError(ValueError):
    """A batch file that cannot be read at all (no header, broken JSON): no row is taken."""


@dataclass(frozen=True)
class ParsedRow:
    """A valid row of a batch file."""

    line: int
    """Line of the file the row starts on, from 1."""
    outcome: Outcome


@dataclass(frozen=True)
class RejectedRow:
    """A row of a batch file that was not recorded, and why."""

    line: int
    """Line of the file the row starts on, from 1."""
    reason: str
    prediction_id: str | None = None
    """The row's prediction id, as given, when it has one."""


@dataclass(frozen=True)
class ParsedBatch:
    """A batch file read into valid outcomes and rejected rows."""

    valid: tuple[ParsedRow, ...]
    rejected: tuple[RejectedRow, ...]


def describe_errors(error: ValidationError) -> str:
    """Say what is wrong with an outcome, field by field: `field: reason; field: reason`."""
    parts = []
    for each in error.errors(include_url=False):
        field = ".".join(str(part) for part in each["loc"]) or "row"
        message = str(each["msg"]).removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def parse_row(
    values: Mapping[str, Any], *, reported_at: datetime, source: str | None = None
) -> Outcome:
    """Validate one batch row into an outcome; raise ValidationError naming the fields at fault.

    Keys are matched without regard to case or surrounding spaces; keys other than `COLUMNS`
    are ignored. An empty `reported_at` or `source` takes the given default.
    """
    row = {str(key).strip().lower(): value for key, value in values.items()}
    fields = {name: row[name] for name in COLUMNS if _empty_to_none(row.get(name)) is not None}
    fields.setdefault(REPORTED_AT, reported_at)
    if source is not None:
        fields.setdefault(SOURCE, source)
    return Outcome.model_validate(fields)


def parse_rows(
    rows: Iterable[tuple[int, object]], *, reported_at: datetime, source: str | None = None
) -> ParsedBatch:
    """Validate numbered rows (line, mapping) into valid outcomes and rejected rows."""
    valid: list[ParsedRow] = []
    rejected: list[RejectedRow] = []
    for line, values in rows:
        if not isinstance(values, Mapping):
            rejected.append(RejectedRow(line, f"malformed: not an object but {values!r:.60}"))
            continue
        try:
            outcome = parse_row(values, reported_at=reported_at, source=source)
        except ValidationError as error:
            given = _given_id(values)
            rejected.append(RejectedRow(line, f"malformed: {describe_errors(error)}", given))
        else:
            valid.append(ParsedRow(line, outcome))
    return ParsedBatch(tuple(valid), tuple(rejected))


def parse_csv(text: str, *, reported_at: datetime, source: str | None = None) -> ParsedBatch:
    """Read a CSV batch: a header naming the columns, then one outcome per line.

    The delimiter (comma, semicolon or tab) is the one the header uses most. Blank lines are
    skipped; a row with more or fewer fields than the header is rejected.
    """
    text = text.removeprefix("\ufeff")  # a byte-order mark, as spreadsheets write
    delimiter = max(_DELIMITERS, key=text.partition("\n")[0].count)
    records = _csv_records(text, delimiter)
    first = next(records, None)
    if first is None:
        raise MalformedBatchError(
            f"expected a header naming {', '.join(REQUIRED_COLUMNS)}, found nothing"
        )
    header_line, names = first
    header = [name.strip().lower() for name in names]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise MalformedBatchError(
            f"line {header_line}: the header must name {', '.join(REQUIRED_COLUMNS)}; "
            f"{', '.join(missing)} missing from {header!r:.200}"
        )
    repeated = sorted({name for name in header if name in COLUMNS and header.count(name) > 1})
    if repeated:
        raise MalformedBatchError(
            f"line {header_line}: the header names {', '.join(repeated)} twice"
        )
    rows: list[tuple[int, object]] = [
        (line, dict(zip(header, fields, strict=True)))
        if len(fields) == len(header)
        else (line, _Unreadable(f"{len(fields)} fields where the header has {len(header)}"))
        for line, fields in records
    ]
    return _parse_lines(rows, reported_at=reported_at, source=source)


def parse_json(text: str, *, reported_at: datetime, source: str | None = None) -> ParsedBatch:
    """Read a JSON batch: an array of objects, or JSON Lines (one object per line).

    In an array, broken JSON makes the whole file unreadable; in JSON Lines, only its line.
    """
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise MalformedBatchError("the file is empty: expected a JSON array of outcomes")
    rows = _array_rows(text, start) if text[start] == "[" else _json_lines(text)
    return _parse_lines(rows, reported_at=reported_at, source=source)


@dataclass(frozen=True)
class _Unreadable:
    """A row that could not be read at all (broken JSON, a wrong number of CSV fields)."""

    reason: str


def _parse_lines(
    rows: Iterable[tuple[int, object]],
    *,
    reported_at: datetime,
    source: str | None,
) -> ParsedBatch:
    readable: list[tuple[int, object]] = []
    unreadable: list[RejectedRow] = []
    for line, values in rows:
        if isinstance(values, _Unreadable):
            unreadable.append(RejectedRow(line, f"malformed: {values.reason}"))
        else:
            readable.append((line, values))
    parsed = parse_rows(readable, reported_at=reported_at, source=source)
    rejected = sorted(parsed.rejected + tuple(unreadable), key=lambda row: row.line)
    return ParsedBatch(parsed.valid, tuple(rejected))


def _csv_records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield each record that is not blank with the line it starts on."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    while True:
        line = reader.line_num + 1  # a quoted field may span lines: count from the last record
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise MalformedBatchError(f"line {line}: {error}") from None
        if any(field.strip() for field in fields):
            yield line, fields


def _array_rows(text: str, start: int) -> Iterator[tuple[int, object]]:
    try:
        yield from array_elements(text, start)
    except MalformedArrayError as error:
        raise MalformedBatchError(str(error)) from None


def _json_lines(text: str) -> Iterator[tuple[int, object]]:
    for number, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            yield number, json.loads(content)
        except json.JSONDecodeError as error:
            yield number, _Unreadable(f"not valid JSON: {error.msg} (column {error.colno})")


def _given_id(values: Mapping[str, Any]) -> str | None:
    for key, value in values.items():
        if str(key).strip().lower() == PREDICTION_ID and isinstance(value, str) and value.strip():
            return value.strip()[:_SHOWN_CHARACTERS]
    return None
