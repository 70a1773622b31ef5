"""MongoDB adapter for the monitor's own records: `monitoring_runs` and `retraining_decisions`.

One `monitoring_runs` document per window (`_id` = the window's start, ISO 8601 UTC), replaced
when the window is evaluated again (late outcomes, a second run): the policy and the audit
read the window's latest figures. Every decision, to retrain or not, is a new
`retraining_decisions` document. Only operations nx-27017 and MongoDB both answer are used.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from telescore.io.mongodb import Document, MongoStore

RUNS_COLLECTION: Final = "monitoring_runs"
DECISIONS_COLLECTION: Final = "retraining_decisions"


class MonitoringStore(MongoStore):
    """The monitor's collections in one database; use as a context manager."""

    appname = "telescore-monitor"

    def __init__(
        self, uri: str, database: str, *, timeout_ms: int = 5000, read_timeout_ms: int = 600_000
    ) -> None:
        # Small reads and writes, but on a server a large window's read may keep busy.
        super().__init__(uri, database, timeout_ms=timeout_ms, read_timeout_ms=read_timeout_ms)

    @property
    def runs(self) -> Collection[Document]:
        """The `monitoring_runs` collection."""
        return self._collection(RUNS_COLLECTION)

    @property
    def decisions(self) -> Collection[Document]:
        """The `retraining_decisions` collection."""
        return self._collection(DECISIONS_COLLECTION)

    def ensure_indexes(self) -> None:
        """Create the indexes the monitor queries by (idempotent)."""
        self.runs.create_index([("window_start", ASCENDING)])
        self.decisions.create_index([("decided_at", ASCENDING)])
        self.decisions.create_index([("retrain", ASCENDING)])

    def save_run(self, window_key: str, figures: Mapping[str, Any]) -> None:
        """Store a window's figures, replacing those of an earlier evaluation of it."""
        self.runs.replace_one({"_id": window_key}, {"_id": window_key, **figures}, upsert=True)

    def run(self, window_key: str) -> Document | None:
        """Return a window's stored figures, if it was evaluated."""
        return self.runs.find_one({"_id": window_key})

    def recent_runs(self, limit: int) -> list[Document]:
        """Return the `limit` latest windows, oldest first."""
        latest = self.runs.find({}, sort=[("window_start", DESCENDING)]).limit(limit)
        return list(reversed(list(latest)))

    def add_decision(self, decision: Mapping[str, Any]) -> str:
        """Record a decision; return its id."""
        decision_id = str(uuid.uuid4())
        self.decisions.insert_one({"_id": decision_id, **decision})
        return decision_id

    def last_retrain(self) -> Document | None:
        """Return the latest decision that triggered a training run."""
        found = self.decisions.find({"retrain": True}, sort=[("decided_at", DESCENDING)]).limit(1)
        return next(iter(found), None)

    def last_decision(self) -> Document | None:
        """Return the latest decision: each monitor run records one as it ends."""
        found = self.decisions.find({}, sort=[("decided_at", DESCENDING)]).limit(1)
        return next(iter(found), None)

    def retrains(self) -> list[Document]:
        """Return every decision that triggered a training run: `decided_at` and `training`.

        Found by the `retrain` index (and counted here, not by `count_documents`, which
        nx-27017 answers by reading every decision); the policy's cooldown keeps them few.
        """
        # The whole `training` field: nx-27017 leaves out a dotted path's parent in a projection.
        return list(
            self.decisions.find({"retrain": True}, projection={"decided_at": 1, "training": 1})
        )

    def awaiting_training_outcome(self) -> list[Document]:
        """Return the retrain decisions whose training run's end is not yet recorded."""
        return list(
            self.decisions.find(
                {"retrain": True, "training.final": {"$ne": True}},
                sort=[("decided_at", ASCENDING)],
            )
        )

    def set_training_outcome(self, decision_id: str, training: Mapping[str, Any]) -> None:
        """Record what became of the training run a decision triggered."""
        self.decisions.update_one({"_id": decision_id}, {"$set": {"training": dict(training)}})
