"""MongoDB adapter for releases: the routing in force (`routing`) and `release_decisions`.

`routing` holds one document per revision (`_id` = 1, 2, ...); the highest is in force, and the
earlier ones are the history of who routed what, when. Every promotion run's decision, to
promote, roll back or wait, is a new `release_decisions` document. `serving_baselines` holds,
per routing revision (`_id`), every MLServer process's request counts as the routing changed
(`serving_counters` then): a release's failures are counted from there.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from telescore.io.mongodb import (
    REVISION,
    Document,
    MongoStore,
    insert_next_revision,
    latest_revision,
)
from telescore.io.serving_counter_store import SERVING_COUNTERS

ROUTING: Final = "routing"
DECISIONS: Final = "release_decisions"
BASELINES: Final = "serving_baselines"


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
        self.decisions.create_index([("action", ASCENDING)])
        self.routing.create_index([(REVISION, DESCENDING)])

    def current_routing(self) -> Document | None:
        """Return the routing in force (the highest revision), if any was ever set."""
        return latest_revision(self.routing)

    def set_routing(self, routing: Mapping[str, Any]) -> int:
        """Store a new routing revision (the next number) and its baseline; return the revision."""
        revision = insert_next_revision(self.routing, routing)
        # The counts as the routing changes (each process ships them every second or so).
        processes = list(self._collection(SERVING_COUNTERS).find({}))
        self._collection(BASELINES).replace_one(
            {"_id": revision}, {"_id": revision, "processes": processes}, upsert=True
        )
        return revision

    def serving_baseline(self, revision: int | None) -> list[Document]:
        """Return the processes' counts stored as `revision` began (none: counts from zero)."""
        found = self._collection(BASELINES).find_one({"_id": revision}) if revision else None
        return list(found["processes"]) if found else []

    def record_decision(self, decision: Mapping[str, Any]) -> str:
        """Store a release decision; return its id."""
        decision_id = str(uuid.uuid4())
        self.decisions.insert_one({**decision, "_id": decision_id})
        return decision_id

    def latest_decisions(self, limit: int = 20) -> list[Document]:
        """Return the latest release decisions, newest first."""
        return list(self.decisions.find({}, sort=[("decided_at", DESCENDING)], limit=limit))

    def decisions_taking(self, actions: Sequence[str]) -> list[Document]:
        """Return the decisions that took one of `actions`: their action and challenger.

        For the rare actions (promote, roll back, supersede): found by the `action` index and
        counted here, not by `count_documents`, which nx-27017 answers by reading them all.
        """
        return list(
            self.decisions.find(
                {"action": {"$in": list(actions)}},
                projection={"action": 1, "challenger_version": 1},
            )
        )

    def count_all_decisions(self) -> int:
        """Return how many release decisions are stored (the collection's count, not a scan)."""
        return self.decisions.estimated_document_count()
