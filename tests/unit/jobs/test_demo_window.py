"""The window the demo monitors: it holds the sample scored just before."""

from __future__ import annotations

from datetime import UTC, datetime

from telescore.jobs.demo import recent_window


def test_the_recent_window_covers_the_minute_before_and_now() -> None:
    # given the time the demo's sample was scored, late in a minute
    now = datetime(2026, 3, 4, 12, 34, 56, 789000, tzinfo=UTC)
    # when the demo picks the window to monitor
    start, end = recent_window(now)
    # then it starts on the previous whole minute and ends just after now, in whole seconds
    assert start == datetime(2026, 3, 4, 12, 33, tzinfo=UTC), "start: the minute before now's"
    assert end == datetime(2026, 3, 4, 12, 34, 57, tzinfo=UTC), "end: the second after now"
    assert start <= now < end, "the sample's time should be inside the window"
