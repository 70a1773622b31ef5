"""MongoDB adapter for releases: the routing in force (`routing`) and `release_decisions`.

`routing` holds one document per revision (`_id` = 1, 2, ...); the highest is in force, and the
earlier ones are the history of who routed what, when. Every promotion run's decision, to
promote, roll back or wait, is a new `release_decisions` document.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from telescore.io.mongodb import Document, MongoStore

ROUTING: Final = "routing"
DECISIONS: Final = "release_decisions"


class ReleaseStore(MongoStore):
    """Routing and release decisions in one database; use as a context manager."""

    appname = "telescore-releases"

    @property
    def routing(self) -> Collection[Document]:
        """The `routing` collection."""
        return self._collection(ROUTING)

    @property
    def decisions(self) -> Collection[Document]:
        """The `release_decisions` collection."""
        return self._collection(DECISIONS)

    def ensure_indexes(self) -> None:
        """Create the indexes releases are read by (idempotent)."""
        self.decisions.create_index([("decided_at", ASCENDING)])
        self.routing.create_index([("revision", DESCENDING)])

    def current_routing(self) -> Document | None:
        """Return the routing in force (the highest revision), if any was ever set."""
        # By `revision`, not `_id`: nx-27017 orders integer `_id`s as text (9 after 12).
        return self.routing.find_one({}, sort=[("revision", DESCENDING)])

    def set_routing(self, routing: Mapping[str, Any], attempts: int = 5) -> int:
        """Store a new routing revision (the next number); return the revision."""
        for _ in range(attempts):
            current = self.current_routing()
            revision = int(current["_id"]) + 1 if current else 1
            try:
                self.routing.insert_one({**routing, "_id": revision, "revision": revision})
            except DuplicateKeyError:
                continue  # another writer took the number: take the next one
            return revision
        raise RuntimeError(f"no routing revision number free after {attempts} attempts")

    def routing_history(self, limit: int = 20) -> list[Document]:
        """Return the latest routing revisions, newest first."""
        return list(self.routing.find({}, sort=[("revision", DESCENDING)], limit=limit))

    def record_decision(self, decision: Mapping[str, Any]) -> str:
        """Store a release decision; return its id."""
        decision_id = str(uuid.uuid4())
        self.decisions.insert_one({**decision, "_id": decision_id})
        return decision_id

    def latest_decisions(self, limit: int = 20) -> list[Document]:
        """Return the latest release decisions, newest first."""
        return list(self.decisions.find({}, sort=[("decided_at", DESCENDING)], limit=limit))
