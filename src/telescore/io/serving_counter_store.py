"""MongoDB adapter for the MLServer processes' request counts: `serving_counters`.

One document per MLServer process (`_id` = its process id), replaced by the process's
prediction log shipper whenever its counts change (`core.serving_counts.ProcessCounts`, plus
`updated_at` in seconds since the epoch). The release baselines taken from it live with the
routing (`io/release_store.py`).
"""

from __future__ import annotations

from typing import Final

from pymongo.collection import Collection

from telescore.core.serving_counts import ProcessCounts
from telescore.io.mongodb import Document, MongoStore

SERVING_COUNTERS: Final = "serving_counters"


class ServingCounterStore(MongoStore):
    """The serving counters in one database; use as a context manager."""

    appname = "telescore-serving-counters"

    @property
    def counters(self) -> Collection[Document]:
        """The `serving_counters` collection."""
        return self._collection(SERVING_COUNTERS)

    def publish(self, counts: ProcessCounts, updated_at: float) -> None:
        """Store one process's counts in place of its previous ones."""
        document = {**counts.model_dump(), "_id": counts.process, "updated_at": updated_at}
        # `_id` in the document too: nx-27017's upsert does not take it from the filter.
        self.counters.replace_one({"_id": counts.process}, document, upsert=True)

    def processes(self) -> list[Document]:
        """Return every process's counts (one small document per MLServer process started)."""
        return list(self.counters.find({}))

    def forget_before(self, updated_before: float) -> int:
        """Delete the counts of processes silent since `updated_before`; return how many."""
        # Only for processes silent since before the release in force began: their counts
        # since its baseline are zero, so deleting them changes no release's figures.
        return self.counters.delete_many({"updated_at": {"$lt": updated_before}}).deleted_count
