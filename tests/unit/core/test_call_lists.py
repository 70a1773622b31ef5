"""The shared call list's rules: its id, what a replica does next, which lists go."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from telescore.core.call_lists import CacheKey, chunk_starts, lists_to_delete, next_step

NOW = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)


def _key(**changes: Any) -> CacheKey:
    fields: dict[str, Any] = {
        "champion": "3",
        "challenger": None,
        "routing_revision": 7,
        "indicators_revision": 2,
        "day": date(2026, 12, 4),
        "prospects": 41_188,
    }
    return CacheKey(**{**fields, **changes})


def _state(list_id: str, state: str, *, at: float = 0.0) -> dict[str, Any]:
    return {"_id": list_id, "state": state, "scored_at": at, "expires_at": at}


def test_equal_keys_share_an_id_and_any_change_makes_another() -> None:
    # given a key, and keys that differ from it in one part each
    changed = [_key(challenger="4"), _key(routing_revision=8), _key(day=date(2026, 12, 5))]

    # when each is named
    ids = {_key().list_id(), *(each.list_id() for each in changed)}

    # then the key's id is a fixed value, whatever the process (replicas compute it apart),
    # and each change names another list
    assert _key().list_id() == "9502e4808790737f93150fb3", "the id should not depend on the process"
    assert len(ids) == 4, "a change of any part of the key should name another list"


def test_a_replica_reads_claims_takes_over_or_waits() -> None:
    # given a list that is scored under a live lease, and one whose lease lapsed
    live = {"state": "scoring", "expires_at": NOW.timestamp() + 30}
    lapsed = {"state": "scoring", "expires_at": NOW.timestamp() - 1}

    # when a replica that needs the list reads its state / then it does what the state calls for
    assert next_step(None, NOW) == "claim", "an unclaimed list should be claimed"
    assert next_step({"state": "ready"}, NOW) == "read", "a ready list should be read"
    assert next_step(live, NOW) == "wait", "a live lease should be waited for"
    assert next_step(lapsed, NOW) == "take_over", "a lapsed lease should be taken over"


def test_all_but_the_two_newest_ready_lists_and_live_claims_are_deleted() -> None:
    # given three ready lists, another key's live claim and a crashed scorer's lapsed one
    states = [
        _state("old", "ready", at=1),
        _state("previous", "ready", at=2),
        _state("current", "ready", at=3),
        {"_id": "other-key", "state": "scoring", "expires_at": NOW.timestamp() + 30},
        {"_id": "crashed", "state": "scoring", "expires_at": NOW.timestamp() - 30},
    ]

    # when the lists no replica needs are chosen
    dropped = lists_to_delete(states, "current", NOW)

    # then the oldest ready list and the lapsed claim go
    assert sorted(dropped) == ["crashed", "old"], "only old lists and lapsed claims should go"


def test_chunks_cover_every_row_once() -> None:
    # given the campaign's 41,188 prospects, or none
    # when each list is cut into chunks
    campaign, empty = chunk_starts(41_188), chunk_starts(0)

    # then each chunk starts 5,000 rows after the last, the last one short, and none for none
    starts = [0, 5000, 10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000]
    assert campaign == starts, f"9 chunks of up to 5,000 rows expected: {campaign}"
    assert empty == [], "an empty list has no chunk"
