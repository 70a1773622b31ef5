"""The shared call list on nx-27017: claimed once, waited for, taken over, pruned."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import pytest

from telescore.core.call_lists import CacheKey, LeasePolicy
from telescore.io.call_list_store import CallListStore
from telescore.jobs.call_lists import CallListNotReadyError, Columns, SharedCallLists
from telescore.services.processes import ServiceProcess

pytestmark = pytest.mark.integration

ROWS = 12_000
"""Three chunks."""
FAST = LeasePolicy(lease_seconds=60, wait_seconds=30, poll_seconds=0.01)


@pytest.fixture
def store(mongodb: ServiceProcess) -> Iterator[CallListStore]:
    """An open store on a database of its own."""
    with CallListStore(mongodb.uri, f"test_{uuid.uuid4().hex[:12]}") as opened:  # type: ignore[attr-defined]
        yield opened


def _key(revision: int = 1) -> CacheKey:
    return CacheKey("3", None, 7, revision, date(2026, 12, 4), ROWS)


class Scorer:
    """A stand-in for MLServer: counts how often the whole list is scored."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.runs = 0
        self._gate = gate

    def __call__(self) -> Iterator[Columns]:
        self.runs += 1
        run = uuid.uuid4().hex[:8]
        for start in range(0, ROWS, 5000):
            if self._gate is not None:
                assert self._gate.wait(30), "the other replica never started waiting"
            ids = [f"P{n:05d}" for n in range(start, min(start + 5000, ROWS))]
            yield {
                "prospect_id": ids,
                "score": [n / ROWS for n in range(start, start + len(ids))],
                "prediction_id": [f"{run}-{each}" for each in ids],
                "model_version": ["3"] * len(ids),
                "route": ["champion"] * len(ids),
            }


def test_two_replicas_get_one_list_scored_once(store: CallListStore) -> None:
    # given two replicas; the second starts waiting while the first is still scoring
    waiting = threading.Event()

    def pause(seconds: float) -> None:
        waiting.set()
        time.sleep(seconds)

    scorer = Scorer(gate=waiting)
    first = SharedCallLists(store, FAST)
    second = SharedCallLists(store, FAST, pause=pause)
    # when both need the list of one key at once
    with ThreadPoolExecutor(2) as pool:
        scored = pool.submit(first.obtain, _key(), scorer)
        while store.state(_key().list_id()) is None:  # the first replica's claim is stored
            time.sleep(0.01)
        read = pool.submit(second.obtain, _key(), scorer)
        lists = scored.result(60), read.result(60)
    # then the list was scored once, and both replicas hold the same rows
    assert scorer.runs == 1, "the list should be scored by one replica only"
    assert lists[0] is not None and lists[1] is not None, "both replicas should get the list"
    assert lists[0].scored_here and not lists[1].scored_here, "the second should read the first's"
    assert lists[0].columns == lists[1].columns, "both replicas should show the same rows and ids"
    assert len(lists[1].columns["prediction_id"]) == ROWS, "every row should be stored"
    assert lists[0].scored_at == lists[1].scored_at, "both should say when the list was scored"


def test_a_replica_started_later_reads_the_stored_list(store: CallListStore) -> None:
    scorer = Scorer()
    stored = SharedCallLists(store, FAST).obtain(_key(), scorer)
    later = SharedCallLists(store, FAST).obtain(_key(), scorer)
    assert scorer.runs == 1, "a later replica should not score the list again"
    assert stored is not None and later is not None
    assert later.columns == stored.columns, "the later replica should show the stored rows"


def test_a_lapsed_lease_is_taken_over(store: CallListStore) -> None:
    # given a scorer that claimed the list and crashed: its lease lapsed a minute ago
    key = _key()
    lapsed = datetime.now(UTC).timestamp() - 60
    assert store.claim(key.list_id(), "crashed", lapsed, key.as_record())
    scorer = Scorer()
    # when another replica needs the list
    taken = SharedCallLists(store, FAST).obtain(key, scorer)
    # then it scores the list itself
    assert scorer.runs == 1 and taken is not None and taken.scored_here, "it should take over"
    assert store.state(key.list_id())["state"] == "ready", "the list should be ready"  # type: ignore[index]


def test_a_live_lease_is_waited_for_then_refused_clearly(store: CallListStore) -> None:
    # given another replica's claim that holds for a minute, and never completes
    key = _key()
    assert store.claim(key.list_id(), "slow", datetime.now(UTC).timestamp() + 60, {})
    impatient = SharedCallLists(store, LeasePolicy(wait_seconds=0.2, poll_seconds=0.05))
    # when a replica with a previous list looks, then one without any
    meanwhile = impatient.obtain(key, Scorer(), wait=False)
    with pytest.raises(CallListNotReadyError, match="another app replica"):
        impatient.obtain(key, Scorer())
    # then the first keeps its previous list (None), the second is told to try again
    assert meanwhile is None, "a replica with a list should not wait for another's scoring"


def test_a_failed_scoring_gives_the_claim_up(store: CallListStore) -> None:
    def failing() -> Iterator[Columns]:
        raise ConnectionError("MLServer is down")
        yield {}

    with pytest.raises(ConnectionError):
        SharedCallLists(store, FAST).obtain(_key(), failing)
    assert store.state(_key().list_id()) is None, "another replica should be free to claim it"


def test_only_the_current_and_previous_lists_are_kept(store: CallListStore) -> None:
    shared = SharedCallLists(store, FAST)
    for revision in (1, 2, 3):
        shared.obtain(_key(revision), Scorer())
    kept = {each["_id"] for each in store.states()}
    assert kept == {_key(2).list_id(), _key(3).list_id()}, "older lists should be deleted"
    chunks = {doc["list_id"] for doc in store.chunks.find({})}
    assert chunks == kept, "the chunks of deleted lists should go too"
