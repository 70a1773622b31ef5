"""The login throttle's rules: a sliding window per user name and per client address."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telescore.core.login_throttle import (
    LoginLimits,
    longest_wait,
    retry_after,
    throttle_keys,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=15)


def test_tries_below_the_limit_are_admitted() -> None:
    # given four failures in the window, a limit of five / then the next try is admitted
    failures = [NOW - timedelta(minutes=minutes) for minutes in (1, 2, 3, 4)]
    assert retry_after(failures, NOW, 5, WINDOW) is None, "four of five should be admitted"


def test_the_limit_reached_waits_until_the_oldest_failure_leaves_the_window() -> None:
    # given five failures, the oldest 10 minutes ago
    failures = [NOW - timedelta(minutes=minutes) for minutes in (10, 8, 6, 4, 2)]
    # when the sixth try comes / then it waits the 5 minutes left of the oldest failure
    assert retry_after(failures, NOW, 5, WINDOW) == 300, "wait until the oldest leaves"


def test_failures_older_than_the_window_do_not_count() -> None:
    # given five failures, one of them older than the window
    failures = [NOW - timedelta(minutes=minutes) for minutes in (16, 4, 3, 2, 1)]
    # then the next try is admitted
    assert retry_after(failures, NOW, 5, WINDOW) is None, "a failure past the window is forgotten"


def test_many_failures_wait_for_enough_of_them_to_leave() -> None:
    # given seven failures (more than the limit, as replicas racing may record)
    failures = [NOW - timedelta(minutes=minutes) for minutes in (14, 12, 10, 8, 6, 4, 2)]
    # then the wait lasts until only limit - 1 are left: the third oldest leaves in 5 minutes
    assert retry_after(failures, NOW, 5, WINDOW) == 300, "wait for the third oldest"


def test_a_wait_is_at_least_one_second() -> None:
    # given the oldest failure leaving the window within the second
    failures = [NOW - WINDOW + timedelta(milliseconds=200)] * 5
    # then Retry-After still says one second, never zero
    assert retry_after(failures, NOW, 5, WINDOW) == 1, "Retry-After is a positive integer"


def test_the_user_and_the_address_have_their_own_limits() -> None:
    # given five failures for a user, tried from five addresses
    limits = LoginLimits(window=WINDOW, per_user=5, per_address=20)
    user, address = throttle_keys("Alice ", "10.0.0.1")
    times = [NOW - timedelta(minutes=1)] * 5
    # then the user waits, however many addresses try
    assert longest_wait({user: times, address: times[:1]}, NOW, limits) is not None
    # and an address with five failures over many names is still admitted
    assert longest_wait({address: times}, NOW, limits) is None, "per address admits 20"
    assert user == "user:alice", "names are counted as stored: lower case, trimmed"


def test_limits_must_admit_something() -> None:
    # given a limit of zero / then it is refused
    with pytest.raises(ValueError, match="at least 1"):
        LoginLimits(per_user=0)
