"""Sessions, CSRF tokens and API keys: who is asking, and may they.

The page: a signed, HttpOnly, SameSite=Lax session cookie names the user, the user's session
epoch and the session's CSRF token; every form carries that token back. The epoch is stored
with the user and raised by a logout, a new password or a new role: a cookie naming an older one
is refused, on every replica. The role is read from the store with the epoch, never from the
cookie; both are remembered for `SESSION_CHECK_SECONDS`, so a page view costs no database read
(a session ended elsewhere stops working within that time, at once on the replica ending it).
The login form, before any session, uses a signed CSRF cookie and the same token in the form
(double submit).
The JSON API: an `X-API-Key` header, checked against the stored hash; a key seen valid is
remembered for `KEY_CACHE_SECONDS`, so a request costs no database read (a revoked key stops
working within that time).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from itsdangerous import BadSignature, URLSafeTimedSerializer

from telescore.core.access import Principal, Role
from telescore.io.access_store import AccessStore
from telescore.jobs.access import UserSession, current_session, end_sessions, verify_api_key
from telescore.settings import Settings

SESSION_COOKIE: Final = "telescore_session"
LOGIN_CSRF_COOKIE: Final = "telescore_login_csrf"
KEY_CACHE_SECONDS: Final = 30.0
NOTICE_SECONDS: Final = 600
"""How long the page shows a notice its URL carries (signed: a link cannot make up one)."""
SECRET_FILE: Final = "app-secret"  # noqa: S105 - a file name, not a secret


SESSION_CHECK_SECONDS: Final = 5.0


@dataclass(frozen=True)
class SessionCookie:
    """What a session cookie the app signed says: who, in which epoch, and the form token."""

    user: str
    epoch: int
    csrf_token: str


@dataclass(frozen=True)
class Session:
    """A logged-in user whose session is live: their role as stored now."""

    user: str
    role: Role
    csrf_token: str


class Sessions:
    """Signs and reads session and login-CSRF cookies."""

    def __init__(self, secret: str, max_age_seconds: int) -> None:
        self._sessions = URLSafeTimedSerializer(secret, salt="telescore-session")
        self._login = URLSafeTimedSerializer(secret, salt="telescore-login-csrf")
        self._notices = URLSafeTimedSerializer(secret, salt="telescore-notice")
        self.max_age_seconds = max_age_seconds

    def new(self, user: UserSession) -> str:
        """Return a session cookie's value for a user just logged in."""
        token = secrets.token_urlsafe(24)
        return self._sessions.dumps({"u": user.principal.name, "e": user.epoch, "c": token})

    def read(self, cookie: str | None) -> SessionCookie | None:
        """Return what a session cookie says; None if absent, forged, expired or of old form."""
        if not cookie:
            return None
        try:
            data: Any = self._sessions.loads(cookie, max_age=self.max_age_seconds)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("e"), int):
            return None  # a cookie from before epochs carries a frozen role: refused
        return SessionCookie(str(data["u"]), data["e"], str(data["c"]))

    def sign_notice(self, notice: str) -> str:
        """Return a notice signed for the URL of the page that shows it."""
        return self._notices.dumps(notice)

    def read_notice(self, signed: str | None) -> str | None:
        """Return a notice the app signed lately; None for any other text (never shown)."""
        if not signed:
            return None
        try:
            notice = self._notices.loads(signed, max_age=NOTICE_SECONDS)
        except BadSignature:
            return None
        return notice if isinstance(notice, str) else None

    def new_login_token(self) -> tuple[str, str]:
        """Return (cookie value, form token) for a login form."""
        token = secrets.token_urlsafe(24)
        return self._login.dumps(token), token

    def login_token_matches(self, cookie: str | None, form_token: str) -> bool:
        """Tell whether a login form's token is the one its signed cookie holds."""
        if not cookie or not form_token:
            return False
        try:
            token = self._login.loads(cookie, max_age=3600)
        except BadSignature:
            return False
        return isinstance(token, str) and tokens_match(token, form_token)


def tokens_match(expected: str, given: str) -> bool:
    """Tell whether a form's CSRF token is the expected one, in constant time."""
    # Bytes, not str: compare_digest refuses non-ASCII strings (a 500), and a form may send any.
    return hmac.compare_digest(expected.encode(), given.encode())


class SessionChecks:
    """Tells live sessions from ended ones, reading users' epochs and roles (cached briefly)."""

    def __init__(
        self,
        store: AccessStore,
        seconds: float = SESSION_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[UserSession | None, float]] = {}

    def cached(self, cookie: SessionCookie) -> tuple[Session | None] | None:
        """Return (the session, or None if ended) if the user was read lately; else None."""
        with self._lock:
            known = self._known.get(cookie.user)
        if known is None or self._clock() - known[1] >= self._seconds:
            return None
        return (_live(cookie, known[0]),)

    def check(self, cookie: SessionCookie) -> Session | None:
        """Return the live session a cookie names, its role as stored now; None if ended."""
        if (cached := self.cached(cookie)) is not None:
            return cached[0]
        user = current_session(self._store, cookie.user)
        with self._lock:
            self._known[cookie.user] = (user, self._clock())
        return _live(cookie, user)

    def end(self, user: str) -> None:
        """End every session of `user` (every replica within the cache time; this one now)."""
        end_sessions(self._store, user)
        self.forget(user)

    def forget(self, user: str) -> None:
        """Drop what is remembered of `user`: the next request reads the store."""
        with self._lock:
            self._known.pop(user, None)


def _live(cookie: SessionCookie, user: UserSession | None) -> Session | None:
    if user is None or user.epoch != cookie.epoch:
        return None
    return Session(cookie.user, user.principal.role, cookie.csrf_token)


class ApiKeys:
    """Checks API keys against the store, remembering valid ones for a short while."""

    def __init__(self, store: AccessStore, seconds: float = KEY_CACHE_SECONDS) -> None:
        self._store = store
        self._seconds = seconds
        self._lock = threading.Lock()
        self._known: dict[str, tuple[Principal, float]] = {}

    def cached(self, key: str) -> Principal | None:
        """Return the key's principal if it was found valid lately, else None (ask `principal`)."""
        with self._lock:
            cached = self._known.get(key)
        if cached is not None and time.monotonic() - cached[1] < self._seconds:
            return cached[0]
        return None

    def principal(self, key: str) -> Principal | None:
        """Return the key's principal, or None for a wrong, unknown or revoked key."""
        if (cached := self.cached(key)) is not None:
            return cached
        principal = verify_api_key(self._store, key)
        with self._lock:
            if principal is None:
                self._known.pop(key, None)
            else:
                self._known[key] = (principal, time.monotonic())
        return principal


def session_secret(settings: Settings) -> str:
    """Return the configured secret; in development, one kept under the state folder.

    Raises ValueError in production when none is configured.
    """
    configured = settings.api.checked_secret_key(settings.project.environment)
    if configured is not None:
        return configured
    path = Path(settings.project.state_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()
