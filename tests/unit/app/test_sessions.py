"""Sessions ended server-side: a kept cookie is refused after a logout, a new password or role."""

from __future__ import annotations

from tests.unit.app.conftest import PASSWORD, FastApp, form_token, log_in

from telescore.app import deps
from telescore.app.security import SESSION_COOKIE, SessionChecks
from telescore.jobs.access import add_user, set_password, set_role


def _kept_cookie(fast_app: FastApp, user: str) -> str:
    log_in(fast_app.client, user)
    cookie = fast_app.client.cookies.get(SESSION_COOKIE)
    assert cookie, "the login should set a session cookie"
    return cookie


def _replayed(fast_app: FastApp, cookie: str) -> int:
    fast_app.client.cookies.set(SESSION_COOKIE, cookie)
    answer = fast_app.client.get("/", follow_redirects=False)
    return answer.status_code


def test_a_session_replayed_after_logout_is_refused(fast_app: FastApp) -> None:
    # given a caller logged in, whose cookie an attacker kept a copy of
    client = fast_app.client
    kept = _kept_cookie(fast_app, fast_app.caller_user)
    page = client.get("/")
    assert page.status_code == 200, "the session works before the logout"
    # when the caller logs out
    out = client.post("/logout", data={"csrf_token": form_token(page.text)}, follow_redirects=False)
    assert out.status_code == 303, out.text
    # then the kept cookie opens no page, and records no call
    assert _replayed(fast_app, kept) == 303, "a cookie kept from before the logout still works"
    forged_call = client.post(
        "/calls",
        data={
            "prospect_id": "P00001",
            "prediction_id": "0190a4c6-1f6e-7b3a-8e2d-3c4b5a6d7e8f",
            "result": "no_answer",
            "csrf_token": form_token(page.text),
        },
        follow_redirects=False,
    )
    assert forged_call.headers["location"] == "/login", "the replayed cookie recorded a call"
    assert not fast_app.services.prospect_store.calls_of("P00001"), "nothing should be stored"


def test_a_new_password_ends_sessions_on_every_replica(fast_app: FastApp) -> None:
    # given a caller logged in on this replica, and another replica that saw the session live
    access = fast_app.services.access_store
    now = [0.0]
    replica = SessionChecks(access, seconds=5.0, clock=lambda: now[0])
    fast_app.client.app.dependency_overrides[deps.get_session_checks] = lambda: replica  # type: ignore[attr-defined]
    kept = _kept_cookie(fast_app, fast_app.caller_user)
    assert _replayed(fast_app, kept) == 200, "the session works before the change"
    # when the password is changed (as the CLI does, not through this replica)
    assert set_password(access, fast_app.caller_user, "a brand new password"), "user exists"
    # then once the replica's brief cache has passed, the old cookie is refused
    now[0] += 5.0
    assert _replayed(fast_app, kept) == 303, "a cookie from before the new password still works"
    # and the new password opens a new session
    fresh = fast_app.client.get("/login")
    answer = fast_app.client.post(
        "/login",
        data={
            "username": fast_app.caller_user,
            "password": "a brand new password",
            "csrf_token": form_token(fresh.text),
        },
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/", "the new password logs in"


def test_a_role_change_ends_sessions_and_the_role_is_read_fresh(fast_app: FastApp) -> None:
    # given an ops user logged in, shown as ops
    access = fast_app.services.access_store
    add_user(access, "olga-ops", PASSWORD, "ops")
    checks: SessionChecks = fast_app.services.session_checks
    kept = _kept_cookie(fast_app, "olga-ops")
    assert "olga-ops (ops)" in fast_app.client.get("/").text, "the page names the role"
    # when the user is made a caller
    assert set_role(access, "olga-ops", "caller"), "user exists"
    checks.forget("olga-ops")  # as the cache's few seconds passing would
    # then the session from when the user was ops is refused
    assert _replayed(fast_app, kept) == 303, "a cookie from the old role still works"
    # and a new login shows the role as stored now
    fast_app.client.cookies.clear()
    log_in(fast_app.client, "olga-ops")
    assert "olga-ops (caller)" in fast_app.client.get("/").text, "the role is read fresh"


def test_session_checks_are_cached_briefly(fast_app: FastApp) -> None:
    # given a session checked once
    access = fast_app.services.access_store
    now = [0.0]
    checks = SessionChecks(access, seconds=5.0, clock=lambda: now[0])
    sessions = fast_app.client.app.state.sessions  # type: ignore[attr-defined]
    log_in(fast_app.client, fast_app.caller_user)
    cookie = sessions.read(fast_app.client.cookies.get(SESSION_COOKIE))
    assert checks.check(cookie) is not None, "a live session"
    # when it is asked again within the cache time / then it is answered without the store
    assert checks.cached(cookie) is not None, "a page view within seconds reads no database"
    now[0] += 5.0
    assert checks.cached(cookie) is None, "after the cache time the store is read again"
