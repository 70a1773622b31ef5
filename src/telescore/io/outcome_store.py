"""MongoDB adapter for call outcomes: the `outcomes` collection, and its join to `predictions`.

An outcome document's `_id` is the prediction id it labels, so an outcome joins its
prediction by `_id` and a prediction has at most one outcome: the first one stored. An outcome
stored before its prediction was logged is `pending` (the flag is indexed): it joins by itself
once the prediction lands; a sweep then clears the flag, or moves the outcome to
`outcomes_expired` with the reason when its prediction never came.

Only operations that both MongoDB and the embedded nx-27017 server answer are used here:
insert_many, find with `$in`, range filters, sort and limit, count_documents, update_many
with `$set`/`$unset`, delete_many and create_index; no aggregation pipelines. The join reads a
window's predictions with one query, a chunk at a time, and fetches each chunk's outcomes with
one `$in` query, so memory is bounded by the chunk size whatever the window.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Final

import pandas as pd
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, CursorNotFound

from telescore.core import outcomes
from telescore.core.outcomes import Outcome, RecordedOutcome, labelled_frame, utc_now
from telescore.core.predictions import FEATURES, ID, TIMESTAMP
from telescore.io.mongodb import Document, MongoStore
from telescore.io.prediction_store import DUPLICATE_KEY, PREDICTIONS_COLLECTION

OUTCOMES_COLLECTION: Final = "outcomes"
EXPIRED_COLLECTION: Final = "outcomes_expired"
"""Pending outcomes whose prediction never came, kept aside with the reason (same `_id`)."""
INDEXED_FIELDS: Final = (outcomes.RECORDED_AT, outcomes.PENDING, outcomes.JOINED_AT)
"""Besides `_id`: outcomes recorded (or joined) since a time, and pending ones, are found."""
DEFAULT_CHUNK_SIZE: Final = 1000
"""Predictions read per query by the join: bounds its memory and the size of each `$in`."""


@dataclass(frozen=True)
class Recorded:
    """What `record` did with one outcome."""

    stored: RecordedOutcome
    """The outcome the collection holds for the prediction now."""
    new: bool
    """True when this call stored it; False when the prediction had an outcome already."""


class OutcomeStore(MongoStore):
    """The `outcomes` collection of one database, joined to its `predictions`; a context manager."""

    appname = "telescore-outcomes"

    def __init__(
        self,
        uri: str,
        database: str,
        *,
        collection: str = OUTCOMES_COLLECTION,
        predictions_collection: str = PREDICTIONS_COLLECTION,
        expired_collection: str = EXPIRED_COLLECTION,
        timeout_ms: int = 1500,
        read_timeout_ms: int | None = None,
    ) -> None:
        # `read_timeout_ms`: the monitor's count of a 1M-row window takes a minute.
        super().__init__(uri, database, timeout_ms=timeout_ms, read_timeout_ms=read_timeout_ms)
        self.collection_name = collection
        self.predictions_collection_name = predictions_collection
        self.expired_collection_name = expired_collection
        self._indexed = False

    @property
    def collection(self) -> Collection[Document]:
        """The `outcomes` pymongo collection (the store must be open)."""
        return self._collection(self.collection_name)

    @property
    def expired(self) -> Collection[Document]:
        """The `outcomes_expired` pymongo collection (the store must be open)."""
        return self._collection(self.expired_collection_name)

    @property
    def predictions(self) -> Collection[Document]:
        """The `predictions` pymongo collection the outcomes label (the store must be open)."""
        return self._collection(self.predictions_collection_name)

    def ensure_indexes(self) -> None:
        """Create the indexes outcomes are queried by (idempotent)."""
        for field in INDEXED_FIELDS:
            self.collection.create_index([(field, ASCENDING)])
        self._indexed = True

    def record(
        self,
        reported: Sequence[Outcome],
        recorded_at: datetime | None = None,
        *,
        pending: Container[str] = frozenset(),
    ) -> list[Recorded]:
        """Store each outcome whose prediction has none yet; say, per outcome, what is stored.

        Outcomes for the prediction ids in `pending` (not logged yet) are stored as pending.
        Idempotent and first-wins: an outcome never replaces another, pending or not. Two
        outcomes for one prediction in `reported` count as two reports, the first stored.
        Raises a pymongo error when MongoDB fails (the caller may retry the same outcomes).
        """
        if not reported:
            return []
        if not self._indexed:
            self.ensure_indexes()  # on the first write, so that MongoDB may be down at start-up
        when = recorded_at or utc_now()
        documents = [
            outcomes.outcome_document(outcome, when, pending=outcome.prediction_id in pending)
            for outcome in reported
        ]
        repeated: set[int] = set()
        try:
            self.collection.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            repeated = _repeated_ids(error)
        stored = self.get_many([documents[index][ID] for index in repeated])
        results = []
        for index, document in enumerate(documents):
            if index not in repeated:
                results.append(Recorded(outcomes.read_outcome_document(document), new=True))
                continue
            before = stored.get(document[ID])
            if before is None:  # refused by another unique index, not by `_id`
                raise RuntimeError(f"MongoDB refused outcome {document[ID]} without storing one")
            results.append(Recorded(before, new=False))
        return results

    def get(self, prediction_id: str) -> RecordedOutcome | None:
        """Return the outcome stored for a prediction, or None."""
        return self.get_many([prediction_id]).get(prediction_id)

    def get_many(self, prediction_ids: Sequence[str]) -> dict[str, RecordedOutcome]:
        """Return the outcomes stored for these predictions, by prediction id (one query)."""
        if not prediction_ids:
            return {}
        found = self.collection.find({ID: {"$in": list(set(prediction_ids))}})
        return {document[ID]: outcomes.read_outcome_document(document) for document in found}

    def prediction_features(self, prediction_id: str) -> Document | None:
        """Return the inputs a logged prediction was scored on; None if it is not logged (yet)."""
        found = self.predictions.find_one({ID: prediction_id}, {FEATURES: 1})
        return dict(found.get(FEATURES) or {}) if found is not None else None

    def known_predictions(self, prediction_ids: Sequence[str]) -> set[str]:
        """Return which of these prediction ids are in the prediction log (one query)."""
        if not prediction_ids:
            return set()
        found = self.predictions.find({ID: {"$in": list(set(prediction_ids))}}, {ID: 1})
        return {document[ID] for document in found}

    def count(self) -> int:
        """Return how many outcomes are recorded for logged predictions (pending ones aside).

        An outcome whose prediction landed since the last sweep is left out until the sweep
        confirms it: the count errs low, never counting an outcome with no prediction.
        """
        return self.collection.count_documents({}) - self.count_pending()

    def count_predictions(self, start: datetime, end: datetime) -> int:
        """Return how many predictions are timestamped in [start, end), of every route."""
        return self.predictions.count_documents({TIMESTAMP: {"$gte": start, "$lt": end}})

    def count_pending(self) -> int:
        """Return how many outcomes wait for their prediction (as of the last sweep)."""
        return self.collection.count_documents({outcomes.PENDING: True})

    def pending_ids(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[list[str]]:
        """Yield the prediction ids of pending outcomes, in `_id` (time) order, in chunks."""
        found = self.collection.find(
            {outcomes.PENDING: True}, projection=[ID], sort=[(ID, ASCENDING)]
        )
        with found as cursor:
            while chunk := [document[ID] for document in islice(cursor, chunk_size)]:
                yield chunk

    def confirm(self, prediction_ids: Sequence[str], joined_at: datetime | None = None) -> int:
        """Mark these pending outcomes as joined to their (now logged) prediction; say how many."""
        if not prediction_ids:
            return 0
        done = self.collection.update_many(
            {ID: {"$in": list(prediction_ids)}, outcomes.PENDING: True},
            {
                "$unset": {outcomes.PENDING: ""},
                "$set": {outcomes.JOINED_AT: joined_at or utc_now()},
            },
        )
        return done.modified_count

    def expire(
        self, reasons: Mapping[str, str], expired_at: datetime | None = None
    ) -> list[Document]:
        """Move these pending outcomes to `outcomes_expired`, each with its reason; return them.

        Idempotent: an outcome moved by an earlier, interrupted call is not moved twice, and
        one that stopped being pending meanwhile (its prediction came) stays where it is.
        """
        if not reasons:
            return []
        when = expired_at or utc_now()
        query = {ID: {"$in": list(reasons)}, outcomes.PENDING: True}
        moved = [
            {**document, outcomes.REASON: reasons[document[ID]], outcomes.EXPIRED_AT: when}
            for document in self.collection.find(query)
        ]
        if not moved:
            return []
        try:
            self.expired.insert_many(moved, ordered=False)
        except BulkWriteError as error:
            _repeated_ids(error)  # kept aside before: raise for anything else
        self.collection.delete_many({**query, ID: {"$in": [each[ID] for each in moved]}})
        return moved

    def recorded_since(self, since: datetime) -> list[str]:
        """Return the prediction ids whose outcome was recorded, or joined, at or after `since`.

        Joined: a pending outcome whose prediction was found logged (by a sweep) since then.
        """
        found = [
            self.collection.find({field: {"$gte": since}}, projection=[ID])
            for field in (outcomes.RECORDED_AT, outcomes.JOINED_AT)
        ]
        return sorted({document[ID] for cursor in found for document in cursor})

    def prediction_times(
        self, prediction_ids: Sequence[str], chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> set[datetime]:
        """Return when the given predictions were scored (their `timestamp`s)."""
        times: set[datetime] = set()
        for offset in range(0, len(prediction_ids), chunk_size):
            page = list(prediction_ids[offset : offset + chunk_size])
            found = self.predictions.find({ID: {"$in": page}}, projection=[TIMESTAMP])
            times.update(document[TIMESTAMP] for document in found)
        return times

    def labelled_predictions(
        self, start: datetime, end: datetime, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Iterator[list[Document]]:
        """Yield the predictions timestamped in [start, end), sorted by `_id`, in chunks.

        Each prediction document comes with its outcome joined: `subscribed` (bool) and
        `reported_at`, both None when no outcome is recorded. A chunk holds at most
        `chunk_size` predictions: one query reads the window, a batch of `chunk_size` at a
        time, and each chunk's outcomes come with one `$in` query. Ids sort as time does, so
        chunks come in time order.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
        window = {TIMESTAMP: {"$gte": start, "$lt": end}}
        last_id: str | None = None
        while True:
            # One query for the whole window, not one per chunk: nx-27017 evaluates a date
            # range by loading every matching document, before any sort or limit, so a query
            # per chunk read the rest of the window again each time (quadratic: 94 s for 100k
            # rows; see docs/benchmarks/monitoring.md). Keyset paging only resumes a cursor
            # the server dropped while the caller worked on a chunk.
            query = window if last_id is None else {**window, ID: {"$gt": last_id}}
            resumed_from = last_id
            try:
                with self.predictions.find(
                    query, sort=[(ID, ASCENDING)], batch_size=chunk_size, allow_disk_use=True
                ) as cursor:
                    while chunk := list(islice(cursor, chunk_size)):
                        labels = self.get_many([prediction[ID] for prediction in chunk])
                        yield [
                            _with_label(prediction, labels.get(prediction[ID]))
                            for prediction in chunk
                        ]
                        last_id = chunk[-1][ID]
                return
            except CursorNotFound:
                if last_id == resumed_from:
                    raise  # dropped before a single chunk: resuming would loop

    def labelled_between(
        self, start: datetime, end: datetime, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> pd.DataFrame:
        """Return the labelled predictions timestamped in [start, end) as training rows.

        Columns as `core.outcomes.labelled_frame` builds them (features, label `y`,
        timestamp, prediction id), in `_id` (time) order; predictions with no outcome are left out.
        """
        labelled = (
            prediction
            for chunk in self.labelled_predictions(start, end, chunk_size)
            for prediction in chunk
            if prediction[outcomes.SUBSCRIBED] is not None
        )
        return labelled_frame(labelled)

    def latest_labelled(self, count: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> pd.DataFrame:
        """Return the `count` most recent labelled predictions as training rows, oldest first.

        Most recent by prediction id, which sorts as the prediction's time; columns as in
        `labelled_between`.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        # Pending outcomes are the newest, and those whose prediction is not logged join
        # nothing: read as many more, so that `count` labelled rows are found all the same.
        extra = self.count_pending()
        newest = self.collection.find({}, sort=[(ID, DESCENDING)]).limit(count + extra)
        labels = {document[ID]: outcomes.read_outcome_document(document) for document in newest}
        ids = sorted(labels)
        rows: list[Document] = []
        for offset in range(0, len(ids), chunk_size):
            page = ids[offset : offset + chunk_size]
            found = self.predictions.find({ID: {"$in": page}}, sort=[(ID, ASCENDING)])
            rows.extend(_with_label(prediction, labels[prediction[ID]]) for prediction in found)
        return labelled_frame(rows[-count:])


def _with_label(prediction: Document, outcome: RecordedOutcome | None) -> Document:
    """Add the outcome's label and report time to a prediction (None for both if unlabelled)."""
    prediction[outcomes.SUBSCRIBED] = outcome.subscribed if outcome else None
    prediction[outcomes.REPORTED_AT] = outcome.reported_at if outcome else None
    return prediction


def _repeated_ids(error: BulkWriteError) -> set[int]:
    """Return the positions refused for a repeated key; raise if any failed otherwise."""
    details = error.details
    if details.get("writeConcernErrors"):
        raise error
    write_errors = details.get("writeErrors", [])
    if any(each.get("code") != DUPLICATE_KEY for each in write_errors):
        raise error  # MongoDB down or failing over, not the outcomes: the caller retries
    return {int(each["index"]) for each in write_errors}
