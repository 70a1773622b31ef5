"""The call list shared by the app's replicas: scored once per cache key, read by all of them.

A replica that needs the list of a key reads it if it is ready; otherwise it claims the scoring
(`call_lists` state document inserted with `_id` = the key's id: one insert wins), scores every
prospect chunk by chunk, renewing its lease after each chunk, stores the chunks, and marks the
list ready. The other replicas wait for that (polling the state, up to `wait_seconds`), or keep
showing their previous list meanwhile, then read the stored one: every replica shows the same
score and prediction id for a prospect, and each prospect is one logged prediction per key.
A lease not renewed for `lease_seconds` (a scorer that crashed) is taken over by the next
replica that looks. Lists other than the newest two ready ones are deleted by each scorer.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pymongo.errors import PyMongoError

from telescore.core.call_lists import (
    STORED_COLUMNS,
    CacheKey,
    LeasePolicy,
    lists_to_delete,
    next_step,
)
from telescore.core.predictions import UNSERVED
from telescore.io.call_list_store import CallListStore

logger = logging.getLogger(__name__)

SCORE_DECIMALS: Final = 12
Columns = dict[str, list[Any]]
"""Scored rows, columnar: one list per name of `STORED_COLUMNS`."""


class CallListNotReadyError(RuntimeError):
    """Another replica is scoring the list and did not finish in time: try again shortly."""


class _LeaseLostError(RuntimeError):
    """This replica's claim was taken over (it was too slow): the other scorer's list wins."""


@dataclass(frozen=True)
class StoredList:
    """A scored list as every replica reads it."""

    list_id: str
    columns: Columns
    scored_at: datetime
    scored_here: bool
    """This replica scored it (its rows are predictions it asked for)."""


class SharedCallLists:
    """Obtains the scored list of a cache key: stored, being scored elsewhere, or scored here."""

    def __init__(
        self,
        store: CallListStore,
        policy: LeasePolicy | None = None,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self.policy = policy or LeasePolicy()
        self.owner = owner or f"app-{uuid.uuid4()}"
        """Who this replica is in a claim."""
        self._clock = clock
        self._pause = pause
        self._indexed = False

    def obtain(
        self, key: CacheKey, score: Callable[[], Iterator[Columns]], *, wait: bool = True
    ) -> StoredList | None:
        """Return the list of `key`, scoring it with `score` if this replica wins the claim.

        `score` yields the scored rows chunk by chunk (`CHUNK_ROWS` each). Without `wait`, None
        while another replica is scoring (the caller shows its previous list meanwhile). Raises
        CallListNotReadyError once `wait_seconds` pass with the list still being scored
        elsewhere, and what `score` raises (the claim is then given up for another replica).
        """
        if not self._indexed:
            self._store.ensure_indexes()
            self._indexed = True
        list_id = key.list_id()
        deadline = time.monotonic() + self.policy.wait_seconds
        while True:
            now = self._clock()
            state = self._store.state(list_id)
            step = next_step(state, now)
            if step == "read":
                assert state is not None  # noqa: S101 - a ready list has a state
                return self._read(state)
            expires_at = self.policy.expiry(now)
            won = (
                step == "claim"
                and self._store.claim(list_id, self.owner, expires_at, key.as_record())
            ) or (
                step == "take_over"
                and state is not None
                and self._store.take_over(list_id, state["owner"], self.owner, expires_at)
            )
            if won:
                if step == "take_over":
                    logger.warning(
                        "call list %s: lease of %s lapsed; scoring it",
                        list_id,
                        state and state["owner"],
                    )
                try:
                    return self._score(list_id, score)
                except _LeaseLostError:
                    logger.warning("call list %s: claim taken over; reading the other's", list_id)
                continue
            if step == "wait":
                if not wait:
                    return None
                if time.monotonic() >= deadline:
                    raise CallListNotReadyError(
                        "the call list is being scored by another app replica and is not ready "
                        f"after {self.policy.wait_seconds:g} s; try again shortly"
                    )
                self._pause(self.policy.poll_seconds)
            # A claim or take-over lost to another replica: look at the state again at once.

    def _score(self, list_id: str, score: Callable[[], Iterator[Columns]]) -> StoredList:
        columns: Columns = {name: [] for name in STORED_COLUMNS}
        chunks = 0
        try:
            for chunk in score():
                if not self._store.renew(list_id, self.owner, self.policy.expiry(self._clock())):
                    raise _LeaseLostError(list_id)
                self._store.write_chunk(list_id, chunks, chunk)
                for name in STORED_COLUMNS:
                    columns[name].extend(chunk[name])
                chunks += 1
            scored_at = self._clock().timestamp()
            rows = len(columns["prospect_id"])
            if not self._store.complete(list_id, self.owner, rows, chunks, scored_at):
                raise _LeaseLostError(list_id)
        except _LeaseLostError:
            raise
        except BaseException:
            with contextlib.suppress(PyMongoError):
                self._store.release(list_id, self.owner)
            raise
        self._store.delete_lists(lists_to_delete(self._store.states(), list_id, self._clock()))
        return StoredList(list_id, columns, _moment(scored_at), scored_here=True)

    def _read(self, state: Mapping[str, Any]) -> StoredList:
        columns: Columns = {name: [] for name in STORED_COLUMNS}
        for chunk in self._store.read_chunks(state["_id"], int(state["chunks"])):
            for name in STORED_COLUMNS:
                columns[name].extend(chunk[name])
        return StoredList(state["_id"], columns, _moment(state["scored_at"]), scored_here=False)


def columns_of(prospect_ids: Sequence[str], scored: Sequence[Any]) -> Columns:
    """Return scored rows (`jobs.scoring.Scored`, in prospect order) as stored columns."""
    return {
        "prospect_id": list(prospect_ids),
        # 12 decimals: nx-27017 gives a double back a unit of its 16th digit off at times, and
        # every replica, the scorer included, must show the same score.
        "score": [round(each.score, SCORE_DECIMALS) for each in scored],
        "prediction_id": [each.prediction_id for each in scored],
        "model_version": [each.model_version for each in scored],
        "route": [each.route for each in scored],
    }


def unserved_columns(prospect_ids: Sequence[str], prediction_ids: Sequence[str]) -> Columns:
    """Return rows logged with no model serving (`jobs.cold_start`) as stored columns: no score."""
    rows = len(prospect_ids)
    return {
        "prospect_id": list(prospect_ids),
        "score": [None] * rows,
        "prediction_id": list(prediction_ids),
        "model_version": [""] * rows,
        "route": [UNSERVED] * rows,
    }


def _moment(epoch_seconds: float) -> datetime:
    # Milliseconds: nx-27017 gives a double back a few microseconds off.
    return datetime.fromtimestamp(round(epoch_seconds, 3), UTC)
