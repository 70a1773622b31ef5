"""The shared call list's pure rules: its cache key's id, the scoring lease, chunks, pruning.

Every app replica needs the same scored list for one cache key. One replica claims the right
to score it (a lease with an expiry, so that a crashed scorer's claim is taken over), writes
the scored rows in chunks, and marks the list ready; the others wait for that, then read it.
This module decides; `io/call_list_store.py` stores; `jobs/call_lists.py` composes them.

Times in the state (`expires_at`, `scored_at`) are seconds since the epoch, not BSON dates:
nx-27017 stores a date written by `$set` as text, which no longer compares with a date.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Final, Literal

SCORING: Final = "scoring"
READY: Final = "ready"
ListState = Literal["scoring", "ready"]

CHUNK_ROWS: Final = 5000
"""Scored rows per stored chunk: 41,188 prospects are 9 chunks of about 0.4 MB of BSON each."""
STORED_COLUMNS: Final = ("prospect_id", "score", "prediction_id", "model_version", "route")
"""What a stored chunk holds per row (columnar): the profile fields are read from `prospects`."""


@dataclass(frozen=True)
class CacheKey:
    """What the scores of the list depend on: any change rescores every prospect."""

    champion: str | None
    challenger: str | None
    routing_revision: int | None
    indicators_revision: int
    day: date
    prospects: int

    def list_id(self) -> str:
        """Return the stored list's id: the same for equal keys in every process."""
        text = "|".join(str(value) for value in asdict(self).values())
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def as_record(self) -> dict[str, Any]:
        """Return the key as stored beside its list (for people reading the collection)."""
        record = asdict(self)
        record["day"] = self.day.isoformat()
        return record


@dataclass(frozen=True)
class LeasePolicy:
    """How long a scorer's claim holds, and how long another replica waits for its list."""

    lease_seconds: float = 60.0
    """A claim not renewed for this long is taken over (scoring 41k rows takes 1.5-5 s)."""
    wait_seconds: float = 120.0
    """Longest a replica without any list waits for another's scoring before it gives up."""
    poll_seconds: float = 0.25
    """Pause between two reads of the state while waiting."""

    def expiry(self, now: datetime) -> float:
        """Return when a claim made or renewed `now` lapses, in seconds since the epoch."""
        return now.timestamp() + self.lease_seconds


Next = Literal["read", "claim", "take_over", "wait"]


def next_step(state: Mapping[str, Any] | None, now: datetime) -> Next:
    """Say what a replica that needs the list does, given the list's stored state.

    `read` a ready list; `claim` one nobody claimed; `take_over` a claim whose lease lapsed
    (its scorer crashed or hangs); `wait` while another replica's lease holds.
    """
    if state is None:
        return "claim"
    if state["state"] == READY:
        return "read"
    return "take_over" if state["expires_at"] <= now.timestamp() else "wait"


def chunk_starts(rows: int, chunk_rows: int = CHUNK_ROWS) -> list[int]:
    """Return the first row of each chunk of a list of `rows` rows (none for an empty list)."""
    return list(range(0, rows, chunk_rows))


def chunk_id(list_id: str, chunk: int) -> str:
    """Return the `_id` of one stored chunk of a list."""
    return f"{list_id}:{chunk:05d}"


def lists_to_delete(
    states: Sequence[Mapping[str, Any]], current: str, now: datetime, keep: int = 2
) -> list[str]:
    """Return the ids of the stored lists no replica needs: all but the newest `keep` ready ones.

    The current list always stays, and so does a list another replica is scoring under a
    live lease (replicas may briefly disagree on the key, e.g. at midnight).
    """
    ready = sorted(
        (each for each in states if each["state"] == READY),
        key=lambda each: each["scored_at"],
        reverse=True,
    )
    kept = {current, *(each["_id"] for each in ready[:keep])}
    live = {
        each["_id"]
        for each in states
        if each["state"] == SCORING and each["expires_at"] > now.timestamp()
    }
    return [each["_id"] for each in states if each["_id"] not in kept | live]
