"""One MongoDB client per store, opened and closed by the caller, with timeouts that fail fast."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pymongo import DESCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

Document = dict[str, Any]


class MongoStore:
    """A store's client on one database; use as a context manager (no connection on import)."""

    appname: ClassVar[str] = "telescore"
    """How the store's connections are named in MongoDB's logs and `currentOp`."""

    def __init__(
        self, uri: str, database: str, *, timeout_ms: int = 1500, read_timeout_ms: int | None = None
    ) -> None:
        self.uri = uri
        self.database = database
        # How soon a down server is noticed (server selection and connection).
        self.timeout_ms = timeout_ms
        # How long one answer may take.
        self.read_timeout_ms = read_timeout_ms or timeout_ms + 500
        self._client: MongoClient[Document] | None = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the client (it connects lazily, on the first operation)."""
        if self._client is None:
            # Short timeouts: a caller (the shipper, an HTTP request) is told within about two
            # seconds that MongoDB is down, rather than after pymongo's default 30 s.
            self._client = MongoClient(
                self.uri,
                serverSelectionTimeoutMS=self.timeout_ms,
                connectTimeoutMS=self.timeout_ms,
                socketTimeoutMS=self.read_timeout_ms,
                tz_aware=True,
                appname=self.appname,
            )

    def close(self) -> None:
        """Close the client and its connections."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _collection(self, name: str) -> Collection[Document]:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} is not open: use it as a context manager")
        return self._client[self.database][name]

    def ping(self) -> None:
        """Raise a pymongo error unless the server answers."""
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} is not open: use it as a context manager")
        self._client.admin.command("ping")


REVISION = "revision"
"""Field (and `_id`) of a numbered revision: 1, 2, ...; the highest is the one in force."""


def latest_revision(collection: Collection[Document]) -> Document | None:
    """Return a revisioned collection's document in force (the highest revision), if any."""
    # By `revision`, not `_id`: nx-27017 orders integer `_id`s as text (9 after 12).
    return collection.find_one({}, sort=[(REVISION, DESCENDING)])


def insert_next_revision(
    collection: Collection[Document], document: Mapping[str, Any], attempts: int = 5
) -> int:
    """Store `document` as the next revision of the collection; return its number.

    The number is taken by inserting it as `_id`: two writers racing for one number get one
    duplicate-key error, and the loser takes the next.
    """
    for _ in range(attempts):
        latest = latest_revision(collection)
        revision = int(latest[REVISION]) + 1 if latest else 1
        try:
            collection.insert_one({**document, "_id": revision, REVISION: revision})
        except DuplicateKeyError:
            continue
        return revision
    raise RuntimeError(f"no {collection.name} revision number free after {attempts} attempts")
