"""OutcomeStore against a real MongoDB wire-protocol server (nx-27017): record, join, count."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import monitoring
from tests.testdata.prospects import PROSPECT

from telescore.core.outcomes import Outcome
from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import ServedModel, prediction_records
from telescore.core.schema import FEATURES, TARGET
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prediction_store import PredictionStore
from telescore.services.processes import ServiceProcess

pytestmark = pytest.mark.integration

START = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
MODEL = ServedModel("telemarketing", "3", "champion")


class _Commands(monitoring.CommandListener):
    """The find commands sent to one database, as MongoDB receives them."""

    def __init__(self) -> None:
        self.database: str | None = None
        self.finds: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database and event.command_name == "find":
            with self._lock:
                self.finds.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


# pymongo takes listeners for clients created after registration, once per process.
COMMANDS = _Commands()
monitoring.register(COMMANDS)


@pytest.fixture
def database() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def predictions(mongodb: ServiceProcess, database: str) -> Iterator[PredictionStore]:
    with PredictionStore(mongodb.uri, database) as opened:  # type: ignore[attr-defined]
        yield opened


@pytest.fixture
def store(mongodb: ServiceProcess, database: str) -> Iterator[OutcomeStore]:
    with OutcomeStore(mongodb.uri, database) as opened:  # type: ignore[attr-defined]
        yield opened


def _log(predictions: PredictionStore, seconds: list[int], rows: int = 1) -> list[str]:
    """Log one request per offset (seconds after START), as the shipper does; return the ids."""
    ids: list[str] = []
    for offset in seconds:
        when = START + timedelta(seconds=offset)
        generator = PredictionIds(clock_ns=lambda when=when: int(when.timestamp() * 1e9))
        request_ids = generator.new(rows)
        records = prediction_records(
            prediction_ids=request_ids,
            request_id=f"request-{offset}",
            model=MODEL,
            rows=[{**PROSPECT, "age": 20 + offset}] * rows,
            scores=[0.5] * rows,
            latency_ms=1.0,
            out_of_range=[[]] * rows,
            timestamp=when,
        )
        assert predictions.insert(records).stored == rows, "the predictions should be logged"
        ids.extend(request_ids)
    return ids


def _outcome(prediction_id: str, subscribed: bool, **fields: Any) -> Outcome:
    return Outcome(prediction_id=prediction_id, subscribed=subscribed, **fields)


def test_the_join_gives_each_prediction_its_own_label_in_bounded_chunks(
    predictions: PredictionStore, store: OutcomeStore, database: str
) -> None:
    # Given predictions before, inside and at the end of a window, some with outcomes
    before = _log(predictions, [-1])
    inside = _log(predictions, [0, 1, 2, 3, 4, 5], rows=1) + _log(predictions, [6], rows=1)
    at_end = _log(predictions, [10])
    labels = {inside[0]: True, inside[3]: False, inside[6]: True, before[0]: True}
    store.record([_outcome(prediction_id, label) for prediction_id, label in labels.items()])
    COMMANDS.database, COMMANDS.finds = database, []

    # When the window is read in chunks of three
    chunks = list(store.labelled_predictions(START, START + timedelta(seconds=10), chunk_size=3))

    # Then memory is bounded by the chunk size: three, three, then the one left
    assert [len(chunk) for chunk in chunks] == [3, 3, 1], "chunks should hold at most 3 rows"
    # And the window is [start, end), in id order
    rows = [row for chunk in chunks for row in chunk]
    assert [row["_id"] for row in rows] == inside, "the window's predictions, sorted by _id"
    assert at_end[0] not in {row["_id"] for row in rows}, "the end of the window is excluded"
    # And each prediction carries its own label, None when no outcome is recorded
    joined = {row["_id"]: row["subscribed"] for row in rows}
    assert joined == {prediction_id: labels.get(prediction_id) for prediction_id in inside}, (
        f"labels joined to the wrong predictions: {joined}"
    )
    assert rows[0]["reported_at"] is not None, "a labelled row carries its report time"
    assert rows[1]["reported_at"] is None, "an unlabelled row has no report time"
    assert rows[0]["features"]["age"] == 20, "the prediction document comes whole"
    # And the window is one predictions query read a chunk at a time (nx-27017 reads a date
    # range whole for every query), and each chunk costs one $in query for its outcomes
    asked = [(find["find"], find.get("batchSize")) for find in COMMANDS.finds]
    assert asked == [("predictions", 3)] + [("outcomes", None)] * 3, f"queries sent: {asked}"
    outcome_ids = [find["filter"]["_id"]["$in"] for find in COMMANDS.finds[1:]]
    assert [sorted(ids) for ids in outcome_ids] == [
        sorted(row["_id"] for row in chunk) for chunk in chunks
    ], "each chunk's outcomes should be fetched by that chunk's ids"


def test_a_window_filling_its_last_chunk_exactly_ends_without_an_empty_chunk(
    predictions: PredictionStore, store: OutcomeStore
) -> None:
    # Given four predictions in one request (one timestamp, ids told apart by row)
    ids = _log(predictions, [0], rows=4)

    # When read in chunks of two / Then two full chunks, nothing more
    chunks = list(store.labelled_predictions(START, START + timedelta(seconds=1), chunk_size=2))
    assert [[row["_id"] for row in chunk] for chunk in chunks] == [ids[:2], ids[2:]], (
        f"rows sharing a timestamp should be paged by id: {chunks}"
    )


def test_an_empty_window_yields_nothing(store: OutcomeStore) -> None:
    chunks = list(store.labelled_predictions(START, START + timedelta(days=1)))
    assert chunks == [], "no predictions, no chunks"


def test_recording_is_idempotent_and_the_first_outcome_wins(
    predictions: PredictionStore, store: OutcomeStore
) -> None:
    # Given an outcome recorded for a prediction
    first, second = _log(predictions, [0, 1])
    recorded_at = START + timedelta(days=1)
    [done] = store.record([_outcome(first, True, source="team a")], recorded_at=recorded_at)

    # When the same outcome, a different one, and one for another prediction come together
    again = store.record(
        [_outcome(first, True), _outcome(first, False), _outcome(second, False)],
        recorded_at=recorded_at + timedelta(hours=1),
    )

    # Then the first is stored, and the others say what was stored before them
    assert done.new and done.stored.subscribed is True, f"the first outcome is stored: {done}"
    assert [(each.new, each.stored.subscribed) for each in again] == [
        (False, True),
        (False, True),
        (True, False),
    ], f"repeats should report the stored outcome, new ones be stored: {again}"
    # And nothing was overwritten
    stored = store.get(first)
    assert stored is not None, "the first outcome should be stored"
    assert (stored.subscribed, stored.source, stored.recorded_at) == (
        True,
        "team a",
        recorded_at,
    ), f"the stored outcome changed: {stored}"
    assert store.collection.count_documents({}) == 2, "one outcome per prediction"


def test_two_outcomes_for_one_prediction_in_one_call_store_the_first(
    predictions: PredictionStore, store: OutcomeStore
) -> None:
    [prediction_id] = _log(predictions, [0])
    results = store.record([_outcome(prediction_id, False), _outcome(prediction_id, True)])
    assert [each.new for each in results] == [True, False], f"first wins: {results}"
    assert results[1].stored.subscribed is False, "the second sees the first as stored"


def test_known_predictions_and_outcomes_are_found_by_id(
    predictions: PredictionStore, store: OutcomeStore
) -> None:
    # Given two logged predictions, one with an outcome, and an id nobody logged
    logged = _log(predictions, [0, 1])
    stranger = PredictionIds().new(1)[0]
    store.record([_outcome(logged[0], True)])

    # When looked up / Then only logged ids are known, and only recorded outcomes found
    assert store.known_predictions([*logged, stranger]) == set(logged), "known predictions"
    assert set(store.get_many([*logged, stranger])) == {logged[0]}, "outcomes by prediction id"
    assert store.get(logged[1]) is None, "no outcome recorded yet"


def test_outcomes_recorded_since_a_time_are_found_from_that_time_on(
    predictions: PredictionStore, store: OutcomeStore
) -> None:
    # Given one outcome recorded at 1 h and two at 2 h
    ids = _log(predictions, [0, 1, 2])
    store.record([_outcome(ids[0], True)], recorded_at=START + timedelta(hours=1))
    store.record([_outcome(ids[1], False), _outcome(ids[2], True)], START + timedelta(hours=2))

    # When asked from 0 h, 2 h (the second record's own time) and 3 h
    found = [store.recorded_since(START + timedelta(hours=hours)) for hours in (0, 2, 3)]

    # Then each time finds the outcomes recorded at or after it
    assert found == [sorted(ids), sorted(ids[1:]), []], f"found by recorded_at: {found}"


def test_indexes_are_made_on_the_first_write(
    predictions: PredictionStore, store: OutcomeStore
) -> None:
    [prediction_id] = _log(predictions, [0])
    store.record([_outcome(prediction_id, True)])
    store.ensure_indexes()  # again: idempotent
    keys = {tuple(index["key"])[0][0] for index in store.collection.index_information().values()}
    assert {"recorded_at", "pending", "joined_at"} <= keys, f"should be indexed: {keys}"


def test_labelled_rows_for_training_come_with_features_label_and_timestamp(
    predictions: PredictionStore, store: OutcomeStore
) -> None:
    # Given five predictions, three with outcomes
    ids = _log(predictions, [0, 1, 2, 3, 4])
    store.record([_outcome(ids[0], True), _outcome(ids[2], False), _outcome(ids[4], True)])

    # When the labelled rows of a window, and the latest two, are read
    window = store.labelled_between(START, START + timedelta(seconds=4), chunk_size=2)
    latest = store.latest_labelled(2)

    # Then they are the labelled ones, oldest first, ready for training
    assert list(window["prediction_id"]) == [ids[0], ids[2]], "labelled rows in the window"
    assert list(window[TARGET]) == ["yes", "no"], "labels as in the dataset"
    assert list(window["age"]) == [20, 22], "features from the prediction documents"
    assert set(FEATURES) <= set(window.columns), "every model input is a column"
    assert list(window["timestamp"]) == [START, START + timedelta(seconds=2)], "timestamps"
    assert list(latest["prediction_id"]) == [ids[2], ids[4]], "the two most recent labelled"
    assert list(latest[TARGET]) == ["no", "yes"], "their labels"


# --- pending outcomes: reported before their prediction is logged -------------------------------


def test_a_pending_outcome_joins_its_prediction_once_logged_and_never_counts_before(
    predictions: PredictionStore, store: OutcomeStore
) -> None:
    # Given two labelled predictions, and an outcome stored pending for an id not logged yet
    ids = _log(predictions, [0, 1])
    generator = PredictionIds(
        clock_ns=lambda: int((START + timedelta(seconds=2)).timestamp() * 1e9)
    )
    [early] = generator.new(1)
    store.record([_outcome(ids[0], True), _outcome(ids[1], False)], recorded_at=START)
    [done] = store.record([_outcome(early, True)], recorded_at=START, pending={early})

    # Then it is stored pending, and counts as no labelled row anywhere
    assert done.new and done.stored.pending, f"it should be stored as pending: {done}"
    assert (store.count(), store.count_pending()) == (2, 1), "a pending outcome is not labelled"
    latest = store.latest_labelled(2)
    assert list(latest["prediction_id"]) == ids, "the newest *labelled* rows, pending aside"
    window = store.labelled_between(START, START + timedelta(seconds=10))
    assert early not in set(window["prediction_id"]), "no prediction, no labelled row"

    # When its prediction is logged (as the shipper would, late)
    records = prediction_records(
        prediction_ids=[early],
        request_id="late",
        model=MODEL,
        rows=[PROSPECT],
        scores=[0.5],
        latency_ms=1.0,
        out_of_range=[[]],
        timestamp=START + timedelta(seconds=2),
    )
    assert predictions.insert(records).stored == 1, "the late prediction should be logged"

    # Then the join labels it by itself, before any sweep
    window = store.labelled_between(START, START + timedelta(seconds=10))
    assert list(window["prediction_id"]) == [*ids, early], "joined once its prediction lands"
    # And once confirmed it counts, and its window learns of it as a late outcome
    joined_at = START + timedelta(days=1)
    assert store.confirm([early], joined_at) == 1, "one pending outcome confirmed"
    assert (store.count(), store.count_pending()) == (3, 0), "confirmed: labelled"
    assert store.get(early) == done.stored.model_copy(update={"pending": False}), "unchanged"
    assert store.recorded_since(joined_at) == [early], "joined since counts as arrived since"


def test_expired_outcomes_are_moved_aside_with_their_reason_once(
    predictions: PredictionStore, store: OutcomeStore
) -> None:
    # Given two pending outcomes for predictions never logged, and a recorded one
    [logged] = _log(predictions, [0])
    strangers = PredictionIds().new(2)
    store.record([_outcome(logged, True)])
    store.record([_outcome(each, True) for each in strangers], pending=set(strangers))

    # When one is expired (twice, as an interrupted sweep run again would), and the recorded
    # one too (it is not pending: it must stay)
    reasons = {strangers[0]: "expired: test", logged: "not pending"}
    moved = store.expire(reasons, START)
    again = store.expire(reasons, START)

    # Then only the pending one is moved, with its reason and time, and only once
    assert [document["_id"] for document in moved] == [strangers[0]], f"moved: {moved}"
    assert again == [], "nothing left to move"
    kept = list(store.expired.find({}))
    assert [(each["_id"], each["reason"], each["expired_at"]) for each in kept] == [
        (strangers[0], "expired: test", START)
    ], f"kept aside: {kept}"
    assert kept[0]["subscribed"] is True, "the outcome itself is kept"
    assert store.get(strangers[0]) is None, "no longer among the outcomes"
    assert store.get(logged) is not None, "a recorded outcome is never expired"
    assert [list(chunk) for chunk in store.pending_ids()] == [[strangers[1]]], "one still pends"
