"""MongoDB adapter for the call list shared by the app's replicas: `call_lists`, `call_list_chunks`.

`call_lists`: one document per cache key (`_id` = `CacheKey.list_id()`): its state (`scoring`
under a lease held by `owner` until `expires_at`, or `ready`), the key's fields, how many rows
and chunks it has, and when it was scored (`scored_at`); times in seconds since the epoch.
`call_list_chunks`: the scored rows, a few thousand per document, columnar (`_id` =
`<list id>:<chunk>`, fields `list_id`, `chunk` and one array per stored column). Few, large
documents: nx-27017 reads a range query whole, and 41k small documents would cost seconds.

Only plain finds, inserts, updates and deletes with `$in` and `$set`: the same on nx-27017 as
on MongoDB (no transactions: a list is visible once its state says `ready`, after its chunks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from telescore.core.call_lists import READY, SCORING, chunk_id
from telescore.io.mongodb import Document, MongoStore

CALL_LISTS: Final = "call_lists"
CHUNKS: Final = "call_list_chunks"


class CallListStore(MongoStore):
    """The shared call lists in one database; use as a context manager."""

    appname = "telescore-app"

    @property
    def lists(self) -> Collection[Document]:
        """The `call_lists` collection (one state document per cache key)."""
        return self._collection(CALL_LISTS)

    @property
    def chunks(self) -> Collection[Document]:
        """The `call_list_chunks` collection (the scored rows)."""
        return self._collection(CHUNKS)

    def ensure_indexes(self) -> None:
        """Create the indexes the lists are read and pruned by (idempotent)."""
        self.chunks.create_index([("list_id", ASCENDING)])

    def state(self, list_id: str) -> Document | None:
        """Return a list's state document, if the list was ever claimed."""
        return self.lists.find_one({"_id": list_id})

    def states(self) -> list[Document]:
        """Return every list's state document (a few: old ones are deleted)."""
        return list(self.lists.find({}))

    def claim(self, list_id: str, owner: str, expires_at: float, key: Mapping[str, Any]) -> bool:
        """Claim the scoring of a list nobody claimed; False if another replica did first."""
        try:
            self.lists.insert_one(
                {
                    "_id": list_id,
                    "state": SCORING,
                    "owner": owner,
                    "expires_at": expires_at,
                    "key": dict(key),
                }
            )
        except DuplicateKeyError:
            return False
        return True

    def take_over(self, list_id: str, lapsed_owner: str, owner: str, expires_at: float) -> bool:
        """Take over a lapsed claim; False if another replica took it, or it was renewed."""
        result = self.lists.update_one(
            {"_id": list_id, "state": SCORING, "owner": lapsed_owner},
            {"$set": {"owner": owner, "expires_at": expires_at}},
        )
        return result.matched_count == 1

    def renew(self, list_id: str, owner: str, expires_at: float) -> bool:
        """Extend this replica's claim; False once another replica took it over."""
        result = self.lists.update_one(
            {"_id": list_id, "state": SCORING, "owner": owner},
            {"$set": {"expires_at": expires_at}},
        )
        return result.matched_count == 1

    def release(self, list_id: str, owner: str) -> None:
        """Give up this replica's claim (its scoring failed): the next replica claims afresh."""
        self.lists.delete_one({"_id": list_id, "state": SCORING, "owner": owner})

    def write_chunk(self, list_id: str, chunk: int, columns: Mapping[str, Sequence[Any]]) -> None:
        """Store one chunk of scored rows (again, after a take-over: the same `_id`)."""
        document_id = chunk_id(list_id, chunk)
        # `_id` in the document too: nx-27017's upsert does not take it from the filter.
        self.chunks.replace_one(
            {"_id": document_id},
            {
                "_id": document_id,
                "list_id": list_id,
                "chunk": chunk,
                **{name: list(values) for name, values in columns.items()},
            },
            upsert=True,
        )

    def complete(self, list_id: str, owner: str, rows: int, chunks: int, scored_at: float) -> bool:
        """Mark the list ready, its chunks all written; False if the claim was taken over."""
        result = self.lists.update_one(
            {"_id": list_id, "state": SCORING, "owner": owner},
            {"$set": {"state": READY, "rows": rows, "chunks": chunks, "scored_at": scored_at}},
        )
        return result.matched_count == 1

    def read_chunks(self, list_id: str, chunks: int) -> list[Document]:
        """Return a ready list's chunks, in order."""
        ids = [chunk_id(list_id, each) for each in range(chunks)]
        found = {doc["chunk"]: doc for doc in self.chunks.find({"_id": {"$in": ids}})}
        if len(found) != chunks:
            raise LookupError(f"call list {list_id}: {chunks - len(found)} chunks missing")
        return [found[each] for each in range(chunks)]

    def delete_lists(self, list_ids: Sequence[str]) -> None:
        """Delete lists and their chunks."""
        if list_ids:
            self.chunks.delete_many({"list_id": {"$in": list(list_ids)}})
            self.lists.delete_many({"_id": {"$in": list(list_ids)}})
