"""When failed logins stop being answered: a sliding window per user and per client address (pure).

Each failed password check is counted twice: under the user name tried and under the address it
came from. Once either has `limit` failures within the window, further tries are refused (429)
until the oldest of those failures leaves the window; nothing is hashed meanwhile. Per user
stops guessing one password from many addresses; per address stops trying many names from one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

USER_PREFIX: Final = "user:"
ADDRESS_PREFIX: Final = "address:"
_MAX_KEY_LENGTH: Final = 80


@dataclass(frozen=True)
class LoginLimits:
    """How many failed logins a window admits, per user name and per client address."""

    window: timedelta = timedelta(minutes=15)
    per_user: int = 5
    per_address: int = 20

    def __post_init__(self) -> None:
        if self.window <= timedelta(0) or self.per_user < 1 or self.per_address < 1:
            raise ValueError("a login window is positive and its limits at least 1")


def throttle_keys(user: str, address: str) -> tuple[str, str]:
    """Return the keys failures are counted under: (the user name tried, the client address)."""
    # Names are compared as users are stored (lower case); any text may be tried, so bounded.
    return (
        USER_PREFIX + user.strip().lower()[:_MAX_KEY_LENGTH],
        ADDRESS_PREFIX + address[:_MAX_KEY_LENGTH],
    )


def limit_of(key: str, limits: LoginLimits) -> int:
    """Return how many failures the window admits under `key`."""
    return limits.per_user if key.startswith(USER_PREFIX) else limits.per_address


def retry_after(
    failures: Iterable[datetime], now: datetime, limit: int, window: timedelta
) -> int | None:
    """Return the seconds until a try is admitted again, or None if it is admitted now.

    `failures` are the times of the failures counted under one key (any order, any age).
    """
    recent: Sequence[datetime] = sorted(at for at in failures if now - window < at <= now)
    if len(recent) < limit:
        return None
    # Admitted again once only limit - 1 failures are left in the window.
    frees_at = recent[len(recent) - limit] + window
    return max(1, math.ceil((frees_at - now).total_seconds()))


def longest_wait(
    failures: dict[str, list[datetime]], now: datetime, limits: LoginLimits
) -> int | None:
    """Return the longest wait any of the keys imposes, or None if none does."""
    waits = [
        wait
        for key, times in failures.items()
        if (wait := retry_after(times, now, limit_of(key, limits), limits.window)) is not None
    ]
    return max(waits) if waits else None
