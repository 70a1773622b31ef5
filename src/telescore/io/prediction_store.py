"""MongoDB adapter for the prediction log: the `predictions` collection, one document per row.

Only operations that both MongoDB and the embedded nx-27017 server answer are used here:
insert_many, find with sort and limit, count_documents and create_index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import bson
from bson.errors import InvalidDocument
from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from telescore.core.predictions import MODEL_VERSION, REQUEST_ID, TIMESTAMP
from telescore.io.mongodb import Document, MongoStore

PREDICTIONS_COLLECTION: Final = "predictions"
DUPLICATE_KEY: Final = 11000
"""MongoDB's error code for a repeated key (`_id`: the record was written before)."""
TRANSIENT_CODES: Final = frozenset(
    {6, 7, 24, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)
"""Per-record error codes that say MongoDB is unavailable or failing over (host unreachable,
lock or time limits, write conflict, shutdown, not primary): the record itself is fine."""
INDEXED_FIELDS: Final = (TIMESTAMP, MODEL_VERSION, REQUEST_ID)

SortSpec = Sequence[tuple[str, int]]


class PredictionStore(MongoStore):
    """The `predictions` collection of one database; use as a context manager."""

    appname = "telescore-prediction-log"

    def __init__(
        self,
        uri: str,
        database: str,
        *,
        collection: str = PREDICTIONS_COLLECTION,
        timeout_ms: int = 1500,
    ) -> None:
        super().__init__(uri, database, timeout_ms=timeout_ms)
        self.collection_name = collection

    @property
    def collection(self) -> Collection[Document]:
        """The underlying pymongo collection (the store must be open)."""
        return self._collection(self.collection_name)

    def ensure_indexes(self) -> None:
        """Create the indexes the monitor queries by (idempotent)."""
        for field in INDEXED_FIELDS:
            self.collection.create_index([(field, ASCENDING)])

    def insert(self, records: Sequence[Mapping[str, Any]]) -> InsertOutcome:
        """Insert records, unordered; say which are stored and which MongoDB refused, and why.

        A record whose `_id` is already stored counts as stored: it was written by an earlier
        try. Raises a pymongo error when the failure is not the records' fault (MongoDB down,
        a failover, a write concern not met): the caller should retry the same records.
        """
        if not records:
            return InsertOutcome(stored=0, refused=())
        # Copies: insert_many would add an `_id` to a caller's dict that lacks one.
        documents = [dict(record) for record in records]
        try:
            self.collection.insert_many(documents, ordered=False)
        except (InvalidDocument, OverflowError):
            # Raised before anything is sent: find the records BSON cannot encode, send the rest.
            good, bad = _split_encodable(documents)
            outcome = self.insert([documents[index] for index in good])
            refused = [Refused(good[each.index], each.reason) for each in outcome.refused] + [
                Refused(index, reason) for index, reason in bad
            ]
            return InsertOutcome(outcome.stored, tuple(sorted(refused)))
        except BulkWriteError as error:
            return _bulk_outcome(error)
        return InsertOutcome(stored=len(documents), refused=())

    def count(self, query: Mapping[str, Any] | None = None) -> int:
        """Return how many predictions match `query` (all when None)."""
        return self.collection.count_documents(dict(query or {}))

    def find(
        self,
        query: Mapping[str, Any] | None = None,
        sort: SortSpec | None = None,
        limit: int = 0,
    ) -> list[Document]:
        """Return the predictions matching `query`, sorted, at most `limit` of them (0: all)."""
        cursor = self.collection.find(dict(query or {}), sort=list(sort) if sort else None)
        return list(cursor.limit(limit))


@dataclass(frozen=True, order=True)
class Refused:
    """A record MongoDB (or BSON) will never take: retrying it would fail the same way."""

    index: int
    """Its position in the records given to `insert`."""
    reason: str


@dataclass(frozen=True)
class InsertOutcome:
    """What one `insert` did."""

    stored: int
    """Records now in the collection, written by this call or by an earlier try."""
    refused: tuple[Refused, ...]


def _bulk_outcome(error: BulkWriteError) -> InsertOutcome:
    details = error.details
    if details.get("writeConcernErrors"):
        raise error
    stored = int(details.get("nInserted", 0))
    refused = []
    for write_error in details.get("writeErrors", []):
        code = write_error.get("code")
        if code in TRANSIENT_CODES:
            raise error  # a failover or shutdown, not the record: retry them all
        if _repeats_id(write_error):
            stored += 1
        else:
            reason = f"MongoDB error {code}: {write_error.get('errmsg', '')}"[:1000]
            refused.append(Refused(int(write_error["index"]), reason))
    return InsertOutcome(stored, tuple(sorted(refused)))


def _repeats_id(write_error: Mapping[str, Any]) -> bool:
    """Tell a repeated `_id` (the record is stored already) from any other refusal."""
    if write_error.get("code") != DUPLICATE_KEY:
        return False
    key_pattern = write_error.get("keyPattern")
    if key_pattern is not None:  # MongoDB names the index's keys
        return dict(key_pattern) == {"_id": 1}
    # nx-27017 names only the SQLite constraint: "UNIQUE constraint failed: <collection>._id".
    message = str(write_error.get("errmsg", ""))
    return message.endswith("._id") or " index: _id_ " in message


def _split_encodable(
    documents: Sequence[Mapping[str, Any]],
) -> tuple[list[int], list[tuple[int, str]]]:
    """Return the positions of documents BSON can encode, and those it cannot with the reason."""
    good: list[int] = []
    bad: list[tuple[int, str]] = []
    for index, document in enumerate(documents):
        try:
            bson.encode(document)
        except (InvalidDocument, OverflowError, TypeError, ValueError) as error:
            bad.append((index, f"cannot be encoded as BSON: {error}"[:1000]))
        else:
            good.append(index)
    return good, bad
