"""Call outcomes: one outcome validated, and batch files read into outcomes and rejected rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError
from tests.testdata.prospects import PROSPECT

from telescore.core import outcomes
from telescore.core.outcomes import (
    MalformedBatchError,
    Outcome,
    RecordedOutcome,
    expiry_reason,
    labelled_frame,
    outcome_document,
    parse_csv,
    parse_json,
    plan_sweep,
    read_outcome_document,
)
from telescore.core.prediction_ids import PredictionIds
from telescore.core.schema import FEATURES, TARGET

NOW = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
IDS = PredictionIds(clock_ns=lambda: 1_715_000_000_000_000_000).new(6)


def _fields(error: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {str(each["loc"][0]) for each in error.value.errors()}


# --- one outcome -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("yes", True),
        ("No", False),
        (" TRUE ", True),
        ("false", False),
        ("1", True),
        ("0", False),
    ],
)
def test_subscribed_reads_booleans_words_and_digits(given: object, expected: bool) -> None:
    # Given a yes/no answer written any of the accepted ways / When validated
    outcome = Outcome(prediction_id=IDS[0], subscribed=given)  # type: ignore[arg-type]

    # Then it is the boolean it means
    assert outcome.subscribed is expected, f"{given!r} should read as {expected}"


@pytest.mark.parametrize("given", ["maybe", "y", "", 2, -1, 0.5, None, [True]])
def test_subscribed_refuses_anything_else_naming_the_field(given: object) -> None:
    # Given an answer that is not yes/no / When validated / Then the error names `subscribed`
    with pytest.raises(ValidationError) as error:
        Outcome(prediction_id=IDS[0], subscribed=given)  # type: ignore[arg-type]
    assert _fields(error) == {"subscribed"}, f"{given!r}: {error.value}"


def test_a_prediction_id_is_kept_in_canonical_form() -> None:
    # Given an id pasted in upper case with spaces around / When validated
    outcome = Outcome(prediction_id=f"  {IDS[0].upper()} ", subscribed=True)

    # Then it is stored as the server wrote it, so that it joins its prediction
    assert outcome.prediction_id == IDS[0], "the id should be stripped and lower-cased"


@pytest.mark.parametrize(
    "given",
    [
        "not-an-id",
        IDS[0][:-1],
        IDS[0].replace("-7", "-4", 1),  # a UUIDv4, not a server's prediction id
        "",
        42,
    ],
)
def test_a_malformed_prediction_id_is_refused_naming_the_field(given: object) -> None:
    with pytest.raises(ValidationError) as error:
        Outcome(prediction_id=given, subscribed=True)  # type: ignore[arg-type]
    assert _fields(error) == {"prediction_id"}, f"{given!r}: {error.value}"


def test_reported_at_defaults_to_now_in_utc_to_the_millisecond() -> None:
    # Given no report time / When validated
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    outcome = Outcome(prediction_id=IDS[0], subscribed=True)
    after = datetime.now(UTC)

    # Then it was reported now, kept as MongoDB keeps it
    assert before <= outcome.reported_at <= after, "reported_at should default to now"
    assert outcome.reported_at.tzinfo is UTC, "reported_at should be in UTC"
    assert outcome.reported_at.microsecond % 1000 == 0, "reported_at should be whole milliseconds"


def test_reported_at_is_converted_to_utc_and_a_naive_time_refused() -> None:
    # Given a time in UTC+2 with microseconds / When validated
    paris = timezone(timedelta(hours=2))
    outcome = Outcome(
        prediction_id=IDS[0],
        subscribed=True,
        reported_at=datetime(2024, 5, 6, 9, 8, 9, 123456, tzinfo=paris),
    )

    # Then it is the same instant in UTC, cut to the millisecond
    assert outcome.reported_at == NOW, f"expected {NOW}, got {outcome.reported_at}"
    assert outcome.reported_at.utcoffset() == timedelta(0), "reported_at should be UTC"
    # And a time without an offset is refused: it could be local or UTC
    with pytest.raises(ValidationError) as error:
        Outcome(prediction_id=IDS[0], subscribed=True, reported_at=datetime(2024, 5, 6))
    assert _fields(error) == {"reported_at"}, str(error.value)


def test_unknown_fields_and_an_overlong_source_are_refused() -> None:
    # Given a misspelt field (it would otherwise be dropped without a word)
    with pytest.raises(ValidationError) as misspelt:
        Outcome.model_validate({"prediction_id": IDS[0], "subscribed": True, "subscibed": False})
    # And a source longer than allowed
    with pytest.raises(ValidationError) as overlong:
        Outcome(prediction_id=IDS[0], subscribed=True, source="x" * 201)

    # Then each error names its field
    assert _fields(misspelt) == {"subscibed"}, str(misspelt.value)
    assert _fields(overlong) == {"source"}, str(overlong.value)


@pytest.mark.parametrize("source", ["team a", None])
def test_an_outcome_document_round_trips(source: str | None) -> None:
    # Given an outcome stored at some time
    outcome = Outcome(prediction_id=IDS[0], subscribed=False, reported_at=NOW, source=source)
    recorded_at = NOW + timedelta(seconds=1, microseconds=999)

    # When turned into its document and back
    document = outcome_document(outcome, recorded_at)
    stored = read_outcome_document(document)

    # Then the document is keyed by the prediction id, and the outcome comes back whole
    assert document["_id"] == IDS[0], "an outcome is stored under its prediction id"
    assert set(document) == set(outcomes.DOCUMENT_FIELDS), f"unexpected fields: {set(document)}"
    expected = RecordedOutcome(**outcome.model_dump(), recorded_at=NOW + timedelta(seconds=1))
    assert stored == expected, f"round trip changed the outcome: {stored}"
    assert stored.pending is False, "an outcome of a logged prediction is not pending"


def test_a_pending_outcome_document_says_so_and_round_trips() -> None:
    # Given an outcome stored before its prediction was logged
    outcome = Outcome(prediction_id=IDS[0], subscribed=True, reported_at=NOW)

    # When turned into its document and back
    document = outcome_document(outcome, NOW, pending=True)
    stored = read_outcome_document(document)

    # Then the document carries the flag (the sweep finds it by it), and the outcome too
    assert document[outcomes.PENDING] is True, f"the document should be flagged: {document}"
    assert stored.pending is True, f"the outcome read back should be pending: {stored}"
    assert stored.model_copy(update={"pending": False}) == RecordedOutcome(
        **outcome.model_dump(), recorded_at=NOW
    ), "apart from the flag, the outcome is the one reported"


# --- pending outcomes: how long they wait --------------------------------------------------------

ISSUED = datetime.fromtimestamp(1_715_000_000, UTC)
"""When `IDS` were issued."""


@pytest.mark.parametrize(
    ("now", "waits"),
    [
        (ISSUED, True),
        (ISSUED + timedelta(hours=23, minutes=59), True),
        (ISSUED - timedelta(hours=1), True),  # an id from a server whose clock is ahead
        (ISSUED + timedelta(hours=24, seconds=1), False),
        (ISSUED - timedelta(hours=24, seconds=1), False),
    ],
)
def test_an_outcome_waits_for_its_prediction_only_within_the_expiry(
    now: datetime, waits: bool
) -> None:
    # Given an id whose prediction is not logged / When judged at `now` with a 24 h expiry
    reason = expiry_reason(IDS[0], now, timedelta(hours=24))

    # Then it may wait within 24 h of its issue, either way; beyond, it is expired, saying why
    if waits:
        assert reason is None, f"an id issued within the expiry should wait: {reason}"
    else:
        assert reason is not None, "an id issued beyond the expiry should be expired"
        assert reason.startswith("expired:"), reason
        assert IDS[0] in reason and "24 h" in reason, f"the reason names id and expiry: {reason}"


def test_a_sweep_confirms_the_logged_expires_the_overdue_and_keeps_the_rest() -> None:
    # Given pending outcomes: one whose prediction is logged now, one issued two days ago and
    # never logged, one issued an hour ago
    old = PredictionIds(clock_ns=lambda: int((ISSUED - timedelta(days=2)).timestamp() * 1e9))
    [overdue] = old.new(1)
    recent = PredictionIds(clock_ns=lambda: int((ISSUED - timedelta(hours=1)).timestamp() * 1e9))
    [awaited] = recent.new(1)

    # When swept now
    plan = plan_sweep([IDS[0], overdue, awaited], {IDS[0]}, ISSUED, timedelta(hours=24))

    # Then the logged one is confirmed, the overdue one expired with its reason, one kept
    assert plan.confirm == (IDS[0],), f"a logged prediction's outcome is confirmed: {plan}"
    assert [prediction_id for prediction_id, _ in plan.expire] == [overdue], f"expired: {plan}"
    assert "more than 24 h ago" in plan.expire[0][1], plan.expire[0][1]
    assert plan.keep == (awaited,), f"a recent one still waits: {plan}"


def test_a_logged_prediction_is_confirmed_however_old() -> None:
    plan = plan_sweep([IDS[0]], {IDS[0]}, ISSUED + timedelta(days=30))
    assert plan.confirm == (IDS[0],) and not plan.expire, f"logged late is still joined: {plan}"


def test_labelled_frame_keeps_labelled_predictions_as_training_rows() -> None:
    # Given two labelled predictions and one without an outcome
    predictions = [
        {"_id": IDS[0], "timestamp": NOW, "features": PROSPECT, "subscribed": True},
        {"_id": IDS[1], "timestamp": NOW, "features": PROSPECT, "subscribed": None},
        {"_id": IDS[2], "timestamp": NOW, "features": PROSPECT, "subscribed": False},
    ]

    # When made into training rows
    frame = labelled_frame(predictions)

    # Then only the labelled ones remain, with the inputs in schema order and the label as yes/no
    assert list(frame["prediction_id"]) == [IDS[0], IDS[2]], "unlabelled rows must be left out"
    assert list(frame.columns) == ["prediction_id", "timestamp", *FEATURES, TARGET], (
        f"columns: {list(frame.columns)}"
    )
    assert list(frame[TARGET]) == ["yes", "no"], "the label should read as in the dataset"
    assert str(frame["timestamp"].dt.tz) == "UTC", "timestamps should be UTC"


def test_labelled_frame_of_nothing_has_the_columns() -> None:
    frame = labelled_frame([])
    assert frame.empty, "no predictions, no rows"
    assert list(frame.columns) == ["prediction_id", "timestamp", *FEATURES, TARGET], (
        "an empty frame should still have the training columns"
    )


# --- CSV batches -------------------------------------------------------------------------------


def test_a_csv_batch_gives_outcomes_and_rejected_rows_with_their_lines() -> None:
    # Given a semicolon CSV with an extra column, a quoted note over two lines, a blank line,
    # and three bad rows
    text = (
        "Prediction_ID;subscribed;note;reported_at\n"  # line 1
        f"{IDS[0]};yes;called twice;\n"  # line 2
        f'{IDS[1]};NO;"wrote\nback";2024-05-06T09:08:09.123+02:00\n'  # lines 3-4
        "\n"  # line 5
        "not-an-id;maybe;;\n"  # line 6
        f"{IDS[2]};1\n"  # line 7: two fields for four
        f"{IDS[3]};yes;;2024-05-06 07:08:09\n"  # line 8: no offset
        f"{IDS[4]};0;;\n"  # line 9
    )

    # When read
    batch = parse_csv(text, reported_at=NOW, source="export.csv")

    # Then the good rows are outcomes with the lines they start on
    assert [(row.line, row.outcome.prediction_id) for row in batch.valid] == [
        (2, IDS[0]),
        (3, IDS[1]),
        (9, IDS[4]),
    ], f"valid rows: {batch.valid}"
    assert [row.outcome.subscribed for row in batch.valid] == [True, False, False], "labels"
    assert batch.valid[1].outcome.reported_at == NOW, "a given report time is kept, in UTC"
    assert batch.valid[0].outcome.reported_at == NOW, "an empty report time defaults to `now`"
    assert batch.valid[0].outcome.source == "export.csv", "no source column: the given source"
    # And each bad row is rejected with its line and a reason naming the field
    rejected = {row.line: row for row in batch.rejected}
    assert sorted(rejected) == [6, 7, 8], f"rejected: {batch.rejected}"
    assert "prediction_id" in rejected[6].reason and "subscribed" in rejected[6].reason, rejected[
        6
    ].reason
    assert rejected[6].prediction_id == "not-an-id", "the rejected row names the id it gave"
    assert "2 fields where the header has 4" in rejected[7].reason, rejected[7].reason
    assert "reported_at" in rejected[8].reason, rejected[8].reason
    assert all(row.reason.startswith("malformed") for row in batch.rejected), batch.rejected


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_a_csv_delimiter_is_taken_from_its_header(delimiter: str) -> None:
    text = f"\ufeffprediction_id{delimiter}subscribed\r\n{IDS[0]}{delimiter}true\r\n"
    batch = parse_csv(text, reported_at=NOW)
    assert [row.outcome.prediction_id for row in batch.valid] == [IDS[0]], f"{delimiter!r}: {batch}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "header"),
        ("\n\n", "header"),
        ("id,label\nx,1\n", "prediction_id, subscribed missing"),
        ("prediction_id,result\nx,1\n", "subscribed missing"),
        ("prediction_id,subscribed,subscribed\n", "subscribed twice"),
    ],
)
def test_a_csv_without_a_usable_header_is_unreadable(text: str, message: str) -> None:
    with pytest.raises(MalformedBatchError, match=message):
        parse_csv(text, reported_at=NOW)


def test_a_csv_with_only_a_header_has_no_rows() -> None:
    batch = parse_csv("prediction_id,subscribed\n", reported_at=NOW)
    assert batch.valid == batch.rejected == (), "a header alone is an empty batch"


# --- JSON batches ------------------------------------------------------------------------------


def test_a_json_array_gives_outcomes_and_rejected_rows_with_their_lines() -> None:
    # Given an array written one element per line or two, with bad elements among good ones
    text = (
        "[\n"  # line 1
        f'  {{"prediction_id": "{IDS[0]}", "subscribed": true, "campaign": "may"}},\n'  # 2
        f'  {{"prediction_id": "{IDS[1]}",\n'  # 3
        '    "subscribed": "perhaps"},\n'  # 4
        "  17,\n"  # 5
        f'  {{"prediction_id": "{IDS[2]}", "subscribed": 0, "source": "crm",\n'  # 6
        '    "reported_at": "2024-05-06T07:08:09.123Z"},\n'  # 7
        '  {"subscribed": "yes"}\n'  # 8
        "]\n"
    )

    # When read
    batch = parse_json(text, reported_at=NOW)

    # Then the good elements are outcomes, on the lines they start
    assert [(row.line, row.outcome.prediction_id) for row in batch.valid] == [
        (2, IDS[0]),
        (6, IDS[2]),
    ], f"valid rows: {batch.valid}"
    assert batch.valid[1].outcome.source == "crm", "a row's own source is kept"
    # And the bad ones are rejected on theirs, naming what is wrong
    rejected = {row.line: row.reason for row in batch.rejected}
    assert sorted(rejected) == [3, 5, 8], f"rejected: {batch.rejected}"
    assert "subscribed" in rejected[3], rejected[3]
    assert "not an object" in rejected[5], rejected[5]
    assert "prediction_id" in rejected[8], rejected[8]


def test_json_lines_reject_only_the_broken_line() -> None:
    # Given JSON Lines with a blank line and a broken one
    text = (
        f'{{"prediction_id": "{IDS[0]}", "subscribed": "yes"}}\n'
        "\n"
        '{"prediction_id": \n'
        f'{{"prediction_id": "{IDS[1]}", "subscribed": "no"}}\n'
    )

    # When read
    batch = parse_json(text, reported_at=NOW)

    # Then the lines around the broken one are taken
    assert [(row.line, row.outcome.subscribed) for row in batch.valid] == [(1, True), (4, False)], (
        f"valid rows: {batch.valid}"
    )
    assert [(row.line, row.reason[:27]) for row in batch.rejected] == [
        (3, "malformed: not valid JSON: ")
    ], f"rejected: {batch.rejected}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("  \n", "empty"),
        ("[", "line 1: the array is not closed"),
        ('[\n{"a": 1},\n]', "line 3: not valid JSON"),
        ('[\n{"a": 1}\n{"b": 2}]', "line 3: expected ','"),
        ("[]\n[]", "line 2: text after the array"),
    ],
)
def test_a_broken_json_array_is_unreadable_with_the_line(text: str, message: str) -> None:
    with pytest.raises(MalformedBatchError, match=message):
        parse_json(text, reported_at=NOW)


def test_an_empty_json_array_has_no_rows() -> None:
    batch = parse_json(" [ ] ", reported_at=NOW)
    assert batch.valid == batch.rejected == (), "an empty array is an empty batch"
