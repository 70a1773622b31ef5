"""MongoDB adapter for the prediction log: the `predictions` collection, one document per row.

Only operations that both MongoDB and the embedded nx-27017 server answer are used here:
insert_many, find with sort and limit, count_documents and create_index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import bson
from bson.errors import InvalidDocument
from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from telescore.core.predictions import MODEL_VERSION, REQUEST_ID, TIMESTAMP

PREDICTIONS_COLLECTION: Final = "predictions"
DUPLICATE_KEY: Final = 11000
"""MongoDB's error code for a repeated `_id`: the record was written before."""
INDEXED_FIELDS: Final = (TIMESTAMP, MODEL_VERSION, REQUEST_ID)

Document = dict[str, Any]
SortSpec = Sequence[tuple[str, int]]


class PredictionStore:
    """The `predictions` collection of one database; use as a context manager."""

    def __init__(
        self,
        uri: str,
        database: str,
        *,
        collection: str = PREDICTIONS_COLLECTION,
        timeout_ms: int = 1500,
    ) -> None:
        self.uri = uri
        self.database = database
        self.collection_name = collection
        self.timeout_ms = timeout_ms
        self._client: MongoClient[Document] | None = None

    def __enter__(self) -> PredictionStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the client (it connects lazily, on the first operation)."""
        if self._client is None:
            # Short timeouts: a down server must be noticed in about a second so the writer can
            # spool, rather than hold a batch for pymongo's default 30 s.
            self._client = MongoClient(
                self.uri,
                serverSelectionTimeoutMS=self.timeout_ms,
                connectTimeoutMS=self.timeout_ms,
                socketTimeoutMS=self.timeout_ms + 500,
                tz_aware=True,
                appname="telescore-prediction-log",
            )

    def close(self) -> None:
        """Close the client and its connections."""
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def collection(self) -> Collection[Document]:
        """The underlying pymongo collection (the store must be open)."""
        if self._client is None:
            raise RuntimeError("PredictionStore is not open: use it as a context manager")
        return self._client[self.database][self.collection_name]

    def ping(self) -> None:
        """Raise a pymongo error unless the server answers."""
        if self._client is None:
            raise RuntimeError("PredictionStore is not open: use it as a context manager")
        self._client.admin.command("ping")

    def ensure_indexes(self) -> None:
        """Create the indexes the monitor queries by (idempotent)."""
        for field in INDEXED_FIELDS:
            self.collection.create_index([(field, ASCENDING)])

    def insert(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Insert records, unordered; return how many are now stored, counting earlier copies."""
        if not records:
            return 0
        try:
            # Copies: insert_many would add an `_id` to a caller's dict that lacks one.
            result = self.collection.insert_many([dict(r) for r in records], ordered=False)
        except BulkWriteError as error:
            details = error.details
            others = [e for e in details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if others or details.get("writeConcernErrors"):
                raise
            # Every failure is a repeated `_id`: those records were written by an earlier try
            # (a replay, or a batch whose acknowledgement was lost), so they count as written.
            return int(details.get("nInserted", 0)) + len(details.get("writeErrors", []))
        return len(result.inserted_ids)

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


def split_encodable(
    records: Sequence[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Split records into those BSON can encode and those it cannot (which can never be stored)."""
    good: list[Mapping[str, Any]] = []
    bad: list[Mapping[str, Any]] = []
    for record in records:
        try:
            bson.encode(record)
        except (InvalidDocument, OverflowError, TypeError, ValueError):
            bad.append(record)
        else:
            good.append(record)
    return good, bad
