"""The replay's record of releases: how long each challenger spent in the shadow, and its end."""

from __future__ import annotations

from telescore.jobs.streaming import ReleaseTimeline


def test_each_release_counts_the_windows_and_calls_it_was_scored_in() -> None:
    # given a release started after window 1, superseded after window 3 by another, which is
    # promoted after window 5, and a third left undecided when the stream ends
    timeline = ReleaseTimeline()
    timeline.started(1, {"version": "2", "release_mode": "shadow"})
    timeline.scored(2000)  # window 2
    timeline.scored(2000)  # window 3
    timeline.started(3, {"version": "3", "release_mode": "shadow", "superseded": "2"})
    timeline.scored(2000)  # window 4
    timeline.scored(1500)  # window 5
    timeline.ended(5, "3", "promote", "ROC AUC significantly better", 2500)
    timeline.scored(2000)  # window 6: no release under way
    timeline.started(6, {"version": "4", "release_mode": "canary"})
    timeline.scored(2000)  # window 7

    # then each release holds the windows and calls scored while it was under way, and its end
    first, second, third = timeline.entries
    assert (first["outcome"], first["windows"], first["calls"]) == ("superseded", 2, 4000), first
    assert (first["started_after_window"], first["ended_after_window"]) == (1, 3), first
    assert (second["outcome"], second["windows"], second["calls"]) == ("promote", 2, 3500), second
    assert second["labelled_rows"] == 2500, second
    assert (third["outcome"], third["mode"], third["windows"]) == (None, "canary", 1), third

    # and the summary counts the endings and the time a promoted challenger took to serve
    summary = timeline.summary()
    assert summary == {
        "started": 3,
        "promote": 1,
        "rollback": 0,
        "superseded": 1,
        "undecided": 1,
        "median_windows_before_serving": 2.0,
        "median_calls_before_serving": 3500.0,
    }, summary


def test_no_promotion_leaves_the_time_to_serve_unknown() -> None:
    # given a release rolled back, when summarised, then no time to serve is made up
    timeline = ReleaseTimeline()
    timeline.started(0, {"version": "2", "release_mode": "shadow"})
    timeline.scored(2000)
    timeline.ended(1, "2", "rollback", "worse", 1000)
    summary = timeline.summary()
    assert summary["rollback"] == 1 and summary["median_windows_before_serving"] is None, summary
