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
    assert _key().list_id() == _key().list_id(), "every replica should name the list alike"
    changed = [_key(challenger="4"), _key(routing_revision=8), _key(day=date(2026, 12, 5))]
    ids = {_key().list_id(), *(each.list_id() for each in changed)}
    assert len(ids) == 4, "a change of any part of the key should name another list"


def test_a_replica_reads_claims_takes_over_or_waits() -> None:
    live = {"state": "scoring", "expires_at": NOW.timestamp() + 30}
    lapsed = {"state": "scoring", "expires_at": NOW.timestamp() - 1}
    assert next_step(None, NOW) == "claim", "an unclaimed list should be claimed"
    assert next_step({"state": "ready"}, NOW) == "read", "a ready list should be read"
    assert next_step(live, NOW) == "wait", "a live lease should be waited for"
    assert next_step(lapsed, NOW) == "take_over", "a lapsed lease should be taken over"


def test_all_but_the_two_newest_ready_lists_and_live_claims_are_deleted() -> None:
    states = [
        _state("old", "ready", at=1),
        _state("previous", "ready", at=2),
        _state("current", "ready", at=3),
        {"_id": "other-key", "state": "scoring", "expires_at": NOW.timestamp() + 30},
        {"_id": "crashed", "state": "scoring", "expires_at": NOW.timestamp() - 30},
    ]
    dropped = lists_to_delete(states, "current", NOW)
    assert sorted(dropped) == ["crashed", "old"], "only old lists and lapsed claims should go"


def test_chunks_cover_every_row_once() -> None:
    assert chunk_starts(41_188) == list(range(0, 41_188, 5000)), "9 chunks of up to 5,000 rows"
    assert chunk_starts(0) == [], "an empty list has no chunk"
