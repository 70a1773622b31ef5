"""The call list's order and sentence while no model serves, and a manual attempt's record."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from telescore.core.cold_start import (
    UNRANKED_ORDER,
    ChampionRecord,
    no_model_sentence,
    unranked_order,
    unranked_sentence,
)
from telescore.core.retraining import (
    MONITOR_TRIGGER,
    manual_attempt_record,
    started_by_monitor,
)

IDS = [f"P{n:05d}" for n in range(1, 201)]


def test_the_unranked_order_is_a_reproducible_shuffle_anyone_can_recompute() -> None:
    # given 200 prospect ids, in the order they were added, and the same ids reversed
    # when the unranked order is taken of each
    order = unranked_order(IDS)
    again = unranked_order(reversed(IDS))

    # then both give one order, whatever the input order (every replica, every day)
    assert order == again, "the order must not depend on how the prospects were read"
    assert sorted(order) == IDS, "every prospect should be listed once"
    # and it is the order of the SHA-256 of the id, as the sentence states
    digests = [hashlib.sha256(each.encode()).hexdigest() for each in order]
    assert digests == sorted(digests), "the order should be that of the ids' SHA-256"
    # and it is a shuffle, not the order of addition: the first page is not the first added
    assert order[:25] != IDS[:25], "the first page should not be the first prospects added"
    assert sum(int(each[1:]) <= 100 for each in order[:100]) < 75, (
        "the first half of the list should mix early and late prospects"
    )


def test_a_prospect_keeps_its_place_relative_to_the_others_as_prospects_are_added() -> None:
    # given the order of 200 prospects / when 50 more are added
    before = unranked_order(IDS)
    after = unranked_order([*IDS, *(f"Q{n:05d}" for n in range(50))])
    # then the first 200 keep their relative order (a caller's progress is not reshuffled)
    assert [each for each in after if each in set(IDS)] == before, "relative order changed"


def test_the_unranked_sentence_states_the_order_then_why_no_model_serves() -> None:
    # given why no model serves: none has passed its gates yet
    reason = no_model_sentence(ChampionRecord(champion=None, versions_registered=False))
    # when the list's sentence is made
    sentence = unranked_sentence(reason)
    # then it says "no model is serving yet: prospects in <order>, unranked; <why>; ..."
    assert sentence.startswith(
        f"no model is serving yet: prospects in {UNRANKED_ORDER}, unranked; "
        "no training run has passed its gates; training is retried"
    ), sentence
    assert "record each call as usual" in sentence, sentence
    assert "minimum score" not in sentence, "no filter was asked for"
    # and with a minimum score asked for, it says the filter is ignored
    assert "minimum score filter is ignored" in unranked_sentence(reason, min_score_ignored=True)


def test_a_manual_attempt_is_recorded_as_the_monitors_cold_start_attempts_are() -> None:
    # given a run started by hand at 10:00, on 1,234 labelled rows, after the 09:00 window
    started = datetime(2026, 3, 1, 10, tzinfo=UTC)
    window = datetime(2026, 3, 1, 9, tzinfo=UTC)

    # when its record is built, the run having failed
    record = manual_attempt_record(
        started_at=started,
        labelled_rows=1234,
        after_window=window,
        state="Failed",
        summary="training run Failed: still no champion (gate)",
        trigger={"note": 3},
    )

    # then it is a retrain decision of the cold start, with what the policy reads
    assert record["retrain"] is True and record["cold_start"] is True, record
    assert record["manual"] is True, "it should say it was started by hand"
    assert record["decided_at"] == started and record["window_start"] == window, record
    assert record["state"]["labelled_rows_available"] == 1234, record["state"]
    assert record["training"] == {
        "final": True,
        "state": "Failed",
        "summary": "training run Failed: still no champion (gate)",
    }, "its end is known at once: the monitor does not follow it"
    assert record["trigger"] == {"note": "3"}, "the trigger is kept as text, as run tags are"


def test_only_the_monitors_trigger_marks_a_run_as_the_monitors() -> None:
    # when the trigger names the monitor / another caller / none / then only the first is
    assert started_by_monitor({"by": MONITOR_TRIGGER, "window": "w"}), "the monitor's own run"
    assert not started_by_monitor({"by": "someone"}), "another trigger is a run by hand"
    assert not started_by_monitor(None), "no trigger is a run by hand"
