"""Logging in with a password, throttled and bounded: the page's login, safe against guessing.

Failed logins are counted in MongoDB (`AccessStore.login_failures`), so every replica sees the
same counts: past the limits of `core.login_throttle`, a try is refused with the seconds to wait
and nothing is hashed. Checking a password costs an argon2id hash (about 64 MiB for a moment):
at most `max_parallel_hashes` run at once, the others wait their turn in the event loop (no
thread held), and give up as busy after `hash_wait_seconds`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from anyio import to_thread

from telescore.core.login_throttle import LoginLimits, longest_wait, throttle_keys
from telescore.io.access_store import AccessStore
from telescore.jobs.access import UserSession, authenticate

BUSY_RETRY_SECONDS = 2
"""What a try refused because too many passwords are being checked is told to wait."""


@dataclass(frozen=True)
class LoginAttempt:
    """What became of a login: the user, or none, and how long to wait if refused unchecked."""

    user: UserSession | None
    retry_after: int | None = None
    """Seconds to wait: the password was not checked (throttled, or too busy)."""
    busy: bool = False
    """Refused because too many passwords were being checked at once, not for failures."""


class LoginGuard:
    """Checks passwords with the throttle and the bound on parallel hashing; one per app."""

    def __init__(
        self,
        store: AccessStore,
        limits: LoginLimits | None = None,
        *,
        max_parallel_hashes: int = 4,
        hash_wait_seconds: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self.limits = limits or LoginLimits()
        self._hashing = asyncio.Semaphore(max_parallel_hashes)
        self._hash_wait_seconds = hash_wait_seconds
        self._clock = clock
        self._indexed = False

    async def log_in(self, name: str, password: str, address: str) -> LoginAttempt:
        """Return the user if the password is theirs; refuse unchecked while throttled or busy."""
        keys = throttle_keys(name, address)
        wait = await to_thread.run_sync(self._wait, keys)
        if wait is not None:
            return LoginAttempt(None, retry_after=wait)
        try:
            await asyncio.wait_for(self._hashing.acquire(), self._hash_wait_seconds)
        except TimeoutError:
            return LoginAttempt(None, retry_after=BUSY_RETRY_SECONDS, busy=True)
        try:
            user = await to_thread.run_sync(self._check, name, password, keys)
        finally:
            self._hashing.release()
        return LoginAttempt(user)

    def _wait(self, keys: tuple[str, str]) -> int | None:
        now = self._clock()
        failures = self._store.failures_since(keys, now - self.limits.window)
        return longest_wait(failures, now, self.limits)

    def _check(self, name: str, password: str, keys: tuple[str, str]) -> UserSession | None:
        user = authenticate(self._store, name, password)
        if user is None:
            if not self._indexed:
                self._store.ensure_indexes()
                self._indexed = True
            now = self._clock()
            self._store.add_failure(keys, now, forget_before=now - self.limits.window)
        else:
            user_key, _ = keys
            self._store.forget_failures(user_key)
        return user
