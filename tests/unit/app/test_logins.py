"""Guessing passwords: failed logins throttled per user and per address, hashing bounded."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tests.unit.app.conftest import PASSWORD, FastApp, form_token

from telescore.io.access_store import AccessStore
from telescore.jobs.access import add_user
from telescore.jobs.logins import LoginGuard


def _try(fast_app: FastApp, user: str, password: str) -> Any:
    client = fast_app.client
    form = client.get("/login")
    return client.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": form_token(form.text)},
        follow_redirects=False,
    )


def test_guessing_one_user_s_password_is_throttled(fast_app: FastApp) -> None:
    # given as many wrong passwords for a user as the window admits
    limits = fast_app.services.logins.limits
    for attempt in range(limits.per_user):
        wrong = _try(fast_app, fast_app.caller_user, f"guess number {attempt}")
        assert wrong.headers["location"] == "/login?error=wrong", f"try {attempt}: {wrong}"
    # when one more is tried, with the right password this time
    refused = _try(fast_app, fast_app.caller_user, PASSWORD)
    # then it is refused unchecked: 429, the wait said in Retry-After, no session
    assert refused.status_code == 429, f"the try past the limit: {refused.status_code}"
    wait = int(refused.headers["retry-after"])
    assert 0 < wait <= limits.window.total_seconds(), f"Retry-After: {wait}"
    assert "Too many failed logins" in refused.text, "the form should say why"
    assert "set-cookie" not in refused.headers or "telescore_session" not in str(
        refused.headers.get_list("set-cookie")
    ), "no session may be opened while throttled"
    # and another replica of the app, on the same MongoDB, refuses it too
    replica = LoginGuard(fast_app.services.access_store, limits)
    attempt = asyncio.run(replica.log_in(fast_app.caller_user, PASSWORD, "10.9.8.7"))
    assert attempt.retry_after is not None, "the count is shared through MongoDB"
    assert attempt.user is None, "a throttled try is not checked"


def test_trying_many_names_from_one_address_is_throttled(fast_app: FastApp) -> None:
    # given an address that failed as often as the window admits, each time with another name
    limits = fast_app.services.logins.limits
    for attempt in range(limits.per_address):
        wrong = _try(fast_app, f"nobody-{attempt}", "some password")
        assert wrong.status_code == 303, f"try {attempt} should be checked: {wrong.status_code}"
    # when a real user logs in from that address, with the right password
    refused = _try(fast_app, fast_app.caller_user, PASSWORD)
    # then it is refused until the window lets the address try again
    assert refused.status_code == 429, f"the address is throttled: {refused.status_code}"
    assert int(refused.headers["retry-after"]) > 0, refused.headers


def test_a_good_login_forgets_the_user_s_failures(fast_app: FastApp) -> None:
    # given a user with failures one short of the limit, then a good login
    limits = fast_app.services.logins.limits
    for attempt in range(limits.per_user - 1):
        _try(fast_app, fast_app.caller_user, f"typo {attempt}")
    assert _try(fast_app, fast_app.caller_user, PASSWORD).headers["location"] == "/"
    # when the user mistypes again / then it is a wrong password, not a throttled one
    again = _try(fast_app, fast_app.caller_user, "typo again")
    assert again.headers["location"] == "/login?error=wrong", f"{again.status_code}"


class _SlowStore:
    """An access store whose user look-up blocks until released, counting those in flight."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.in_flight = 0
        self.peak = 0
        self._changed = threading.Condition()

    def user(self, name: str) -> None:
        with self._changed:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self._changed.notify_all()
        self.release.wait(timeout=30)
        with self._changed:
            self.in_flight -= 1

    def wait_for_in_flight(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.in_flight >= count, timeout=30)

    def failures_since(self, keys: Any, since: Any) -> dict[str, list[Any]]:
        return {}

    def ensure_indexes(self) -> None:
        pass

    def add_failure(self, keys: Any, at: Any, forget_before: Any) -> None:
        pass

    def forget_failures(self, key: str) -> None:
        pass


def test_parallel_password_checks_are_bounded() -> None:
    # given a guard checking at most two passwords at once, on a store that holds each check
    store = _SlowStore()
    guard = LoginGuard(store, max_parallel_hashes=2, hash_wait_seconds=0.3)  # type: ignore[arg-type]

    async def six_tries() -> list[Any]:
        # when six logins come at once
        tries = [
            asyncio.create_task(guard.log_in(f"user-{n}", "password!!", f"10.0.0.{n}"))
            for n in range(6)
        ]
        # the four without a turn give up as busy, while two are held checking
        busy = []
        while len(busy) < 4:
            done, _ = await asyncio.wait(
                [each for each in tries if each not in busy], return_when="FIRST_COMPLETED"
            )
            busy += done
        # both admitted checks are held in the store before any is let go
        assert await asyncio.to_thread(store.wait_for_in_flight, 2), "two checks should run"
        store.release.set()
        return [each.result() for each in busy] + list(await asyncio.gather(*tries))

    results = asyncio.run(six_tries())
    # then never more than two ran at once, and the others were told to come back
    assert store.peak == 2, f"at most two checks at once, saw {store.peak}"
    assert sum(result.busy for result in results[:4]) == 4, results[:4]
    assert all(result.retry_after for result in results[:4]), "busy tries say when to retry"


def test_throttled_names_are_counted_as_stored(fast_app: FastApp) -> None:
    # given a user, and failures under the same name in another case
    access: AccessStore = fast_app.services.access_store
    add_user(access, "bob-x", PASSWORD, "caller")
    for attempt in range(fast_app.services.logins.limits.per_user):
        _try(fast_app, f"BOB-X{' ' * (attempt % 2)}", "wrong password")
    # when bob logs in / then the variants counted against him
    assert _try(fast_app, "bob-x", PASSWORD).status_code == 429, "case is not a way around"
