"""Monitoring windows: aligned on their length, keyed in UTC, aware and not empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from telescore.core.monitoring import Window


def test_the_last_complete_window_is_aligned_on_its_length() -> None:
    # Given a moment inside the 10:30-11:00 half-hour / When the last complete window is asked
    window = Window.last_complete(datetime(2026, 3, 1, 10, 47, 12, tzinfo=UTC), minutes=30)

    # Then it is the half-hour before
    assert window.start == datetime(2026, 3, 1, 10, 0, tzinfo=UTC), window
    assert window.end == datetime(2026, 3, 1, 10, 30, tzinfo=UTC), "10:30-11:00 is not over yet"


def test_a_window_keys_on_its_start_in_utc_whatever_the_zone() -> None:
    # Given a window starting at noon UTC, written in UTC+2
    plus_two = datetime(2026, 3, 1, 12, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    window = Window(plus_two, plus_two + timedelta(hours=1))

    # When keyed / Then the key is its start in UTC
    assert window.key == "2026-03-01T12:00:00+00:00", window.key


def test_a_naive_or_empty_window_is_refused() -> None:
    # Given naive bounds / Then refused
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(datetime(2026, 3, 1), datetime(2026, 3, 1, 1))
    # Given an empty range / Then refused
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="not after its start"):
        Window(start, start)
